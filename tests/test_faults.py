"""Faults: a canceled prediction stops promptly; a killed training leaves no archive."""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import requests

from tests.cog_server import ROOT, data_url, ready_server
from whisper_ft.audio import load_audio, write_audio


class Webhook:
    """Collects the prediction states Cog posts to a webhook."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_cancel_stops_a_long_prediction_promptly(tmp_path, speech_wav):
    long = tmp_path / "long.wav"
    write_audio(long, np.concatenate([load_audio(ROOT / "samples" / "sample.flac")] * 20))
    audio = data_url(long, "audio/wav")
    hook = Webhook()
    with ready_server(tmp_path / "cog.log", env={"WHISPER_FT_MODEL": "tiny.en"}) as server:
        started = requests.put(
            f"{server.url}/predictions/long-one",
            json={"id": "long-one", "input": {"audio": audio}, "webhook": hook.url},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        assert started.status_code == 202
        time.sleep(3)  # well into the four minutes of audio
        start = time.monotonic()
        assert requests.post(f"{server.url}/predictions/long-one/cancel", timeout=30).ok
        while server.health()["status"] != "READY":
            assert time.monotonic() - start < 15, "the canceled prediction kept running"
            time.sleep(0.1)
        time.sleep(0.5)
        assert hook.received[-1]["status"] == "canceled"
        assert server.predict(audio=data_url(speech_wav, "audio/wav"))["status"] == "succeeded"
    hook.httpd.shutdown()


def test_killed_training_leaves_no_archive(tmp_path):
    from tests import vocab

    data = vocab.training_zip(tmp_path / "data")
    out = tmp_path / "out"
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "whisper_ft",
                "train",
                "-i",
                f"train_data=@{data}",
                "-i",
                "base_model=tiny.en",
                "-o",
                str(out),
            ],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={"TMPDIR": str(tmp_path), "PATH": ""},
        )
        deadline = time.monotonic() + 300
        while "step 1/" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not out.exists() or not list(out.iterdir())
    assert not list(tmp_path.rglob("weights.tar"))
