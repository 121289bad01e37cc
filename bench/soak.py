"""Load and soak: many predictions of mixed lengths against Cog's HTTP server.

    .venv/bin/python -m bench.soak                     # 200 requests, tiny.en
    .venv/bin/python -m bench.soak --requests 50 --model base

Requests go first one after another, then from several concurrent clients. The server runs
one prediction at a time and answers 409 while busy (Cog's contract); clients retry. It
records every request's outcome and latency, and the server's memory (RSS of the server and
its worker processes) over time: memory must stay flat, and every request is accounted for.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

from tests.cog_server import CogServer
from tests.speech import espeak, silence
from whisper_ft.audio import load_audio, write_audio

RESULTS = Path(__file__).resolve().parent / "results"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please send the quarterly report to the whole team before Friday.",
    "It was a bright cold day in April and the clocks were striking thirteen.",
)


def clips(folder: Path) -> list[str]:
    """Data URLs of clips of about 3 s, 15 s and 45 s (the long one takes the batched path)."""
    spoken = [load_audio(espeak(s, folder / f"{i}.wav")) for i, s in enumerate(SENTENCES)]
    lengths = {"short": 1, "medium": 4, "long": 12}
    urls = []
    for name, n in lengths.items():
        parts = [x for i in range(n) for x in (spoken[i % 3], silence(0.5))]
        path = folder / f"{name}.wav"
        write_audio(path, np.concatenate(parts))
        urls.append("data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode())
    return urls


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20


def one(url: str, audio: str) -> tuple[str, float, int]:
    """(status, seconds, 409 retries) of one prediction, retrying while the server is busy."""
    start, retries = time.perf_counter(), 0
    while True:
        response = requests.post(url, json={"input": {"audio": audio}}, timeout=600)
        if response.status_code != 409:
            break
        retries += 1
        time.sleep(0.05)
    status = response.json().get("status", f"http {response.status_code}")
    return status, time.perf_counter() - start, retries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    audios = clips(folder)
    server = CogServer(env={"WHISPER_FT_MODEL": args.model}, log=folder / "cog.log")
    memory: list[tuple[float, float]] = []
    done = threading.Event()
    try:
        assert server.wait_ready()["status"] == "READY"
        t0 = time.monotonic()

        def sample():
            while not done.is_set():
                memory.append((time.monotonic() - t0, rss_mb(server.process.pid)))
                time.sleep(1.0)

        threading.Thread(target=sample, daemon=True).start()
        url = f"{server.url}/predictions"
        half = args.requests // 2
        results = [one(url, audios[i % 3]) for i in range(half)]
        print(f"sequential: {half} requests done")
        lock = threading.Lock()
        queue = list(range(half, args.requests))

        def client():
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop()
                outcome = one(url, audios[i % 3])
                with lock:
                    results.append(outcome)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        health = server.health()["status"]
    finally:
        server.stop()

    latencies = sorted(r[1] for r in results)
    statuses = {s: sum(1 for r in results if r[0] == s) for s in {r[0] for r in results}}
    summary = {
        "model": args.model,
        "requests": len(results),
        "statuses": statuses,
        "retries_409": sum(r[2] for r in results),
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
        "max_s": latencies[-1],
        "memory_start_mb": memory[min(5, len(memory) - 1)][1],
        "memory_end_mb": memory[-1][1],
        "memory_peak_mb": max(m for _, m in memory),
        "health_after": health,
    }
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{args.model}.json").write_text(json.dumps(summary | {"memory": memory}))


if __name__ == "__main__":
    main()
