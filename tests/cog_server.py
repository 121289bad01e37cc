"""Start Cog's own HTTP server (coglet) the way a Cog container does, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CogServer:
    """`python -m cog.server.http` serving predict.py (or train.py with train=True)."""

    def __init__(
        self,
        *,
        train: bool = False,
        env: dict | None = None,
        log: Path | None = None,
        upload_url: str | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "PORT": str(self.port),
            "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
            "COG_TRAIN_TYPE_STUB": "train.py:train",
            **(env or {}),
        }
        command = [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"]
        if train:
            command += ["--x-mode", "train"]
        if upload_url:
            command += ["--upload-url", upload_url]
        self.log = log
        self._log_file = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Cog server exited with {self.process.returncode}")
            try:
                health = requests.get(f"{self.url}/health-check", timeout=5).json()
                if health.get("status") in ("READY", "SETUP_FAILED", "DEFUNCT"):
                    return health
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the Cog server did not become ready")

    def health(self) -> dict:
        return requests.get(f"{self.url}/health-check", timeout=5).json()

    def predict(self, timeout: float = 600, **inputs) -> dict:
        return self._post("predictions", inputs, timeout)

    def train(self, timeout: float = 1800, **inputs) -> dict:
        return self._post("trainings", inputs, timeout)

    def _post(self, route: str, inputs: dict, timeout: float) -> dict:
        """POST and wait for the result; a busy server answers 409, and clients retry."""
        deadline = time.monotonic() + 60
        while True:
            response = requests.post(f"{self.url}/{route}", json={"input": inputs}, timeout=timeout)
            if response.status_code != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.log:
            self._log_file.close()


class UploadServer:
    """Receives the files a Cog server uploads (`--upload-url`), as Replicate's storage does."""

    def __init__(self, folder: Path):
        import http.server
        import threading

        folder.mkdir(parents=True, exist_ok=True)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802 (the http.server API)
                name = Path(self.path.split("?")[0]).name
                length = int(self.headers.get("Content-Length", 0))
                with open(folder / name, "wb") as f:
                    remaining = length
                    while remaining:
                        block = self.rfile.read(min(remaining, 1 << 20))
                        if not block:
                            break
                        f.write(block)
                        remaining -= len(block)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.folder = folder
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/uploads/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
