"""Start Cog's own HTTP server (coglet) the way a Cog container does, for end-to-end tests."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def data_url(data: bytes | Path, mime: str = "application/octet-stream") -> str:
    """A file (its bytes or its path) as a data URL, the way clients send small inputs."""
    if isinstance(data, Path):
        data = data.read_bytes()
    return f"data:{mime};base64," + base64.b64encode(data).decode()


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
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The server starts its worker as `python` from PATH: it must be this environment's.
        bin_dir = str(Path(sys.executable).parent)
        environment = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PORT": str(self.port),
            "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
            "COG_TRAIN_TYPE_STUB": "train.py:train",
            **(env or {}),
        }
        command = [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"]
        if train:
            command += ["--x-mode", "train"]
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


@contextlib.contextmanager
def ready_server(log: Path, **options) -> Iterator[CogServer]:
    """A CogServer that has reached READY (or the test fails with its log); stopped after."""
    server = CogServer(log=log, **options)
    try:
        health = server.wait_ready()
        assert health["status"] == "READY", log.read_text()[-3000:]
        yield server
    finally:
        server.stop()
