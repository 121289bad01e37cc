"""Long work for the studio, outside the request: one job at a time, each the project's own
command line (`python -m whisper_ft predict|train ...`) in a child process.

The child is what a user would run by hand, so the studio adds no second way to transcribe
or train. It writes its progress as JSON lines (whisper_ft/progress.py) to a file that the
page reads through `Job.view()`; canceling a job interrupts the child (SIGINT, then SIGTERM),
and its error, if it fails, is the command line's own message.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft import progress
from whisper_ft.studio.store import new_id

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the project: `python -m whisper_ft` runs here
CANCEL_GRACE_SECONDS = 10.0


@dataclass
class Job:
    kind: str  # transcribe, train, compare
    title: str
    steps: list[list[str]]  # command lines run in turn (compare runs two)
    folder: Path
    finish: Callable[[Job, list[dict]], dict] | None = None  # outputs -> result
    id: str = field(default_factory=new_id)
    state: str = "queued"  # queued, running, done, failed, canceled
    message: str = ""
    result: dict | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    process: subprocess.Popen | None = None
    cancel_asked: bool = False

    @property
    def progress_file(self) -> Path:
        return self.folder / "progress.jsonl"

    def events(self) -> list[dict]:
        try:
            lines = self.progress_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def view(self) -> dict:
        """What the page shows: state, the last event of each kind, the epochs so far."""
        events = self.events()
        last = {e["event"]: e for e in events}
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "state": self.state,
            "message": self.message,
            "result": self.result,
            "created": self.created,
            "finished": self.finished,
            "last": last,
            "epochs": [e for e in events if e["event"] == "epoch"],
        }


class Jobs:
    """A queue of jobs run one after another by a worker thread."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.all: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        threading.Thread(target=self._work, name="studio-jobs", daemon=True).start()

    def submit(self, kind: str, title: str, steps: list[list[str]], finish=None) -> Job:
        folder = self.folder / new_id()
        folder.mkdir(parents=True)
        job = Job(kind, title, steps, folder, finish)
        self.all[job.id] = job
        with self._wake:
            self._queue.append(job)
            self._wake.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.all.get(job_id)

    def cancel(self, job: Job) -> None:
        job.cancel_asked = True
        if job.state == "queued":
            job.state, job.message, job.finished = "canceled", "canceled", time.time()
        elif job.process is not None and job.process.poll() is None:
            job.process.send_signal(signal.SIGINT)
            threading.Timer(CANCEL_GRACE_SECONDS, _terminate, args=(job.process,)).start()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
                job = self._queue.popleft()
            if job.state == "queued":
                self._run(job)

    def _run(self, job: Job) -> None:
        job.state = "running"
        outputs = []
        try:
            for k, command in enumerate(job.steps):
                outputs.append(self._run_step(job, command, job.folder / f"out{k}"))
                if job.cancel_asked:
                    break
            if job.cancel_asked:
                job.state, job.message = "canceled", "canceled"
            else:
                job.result = job.finish(job, outputs) if job.finish else {"outputs": outputs}
                job.state = "done"
        except Exception as e:  # the job fails; the studio goes on serving
            logger.warning("job %s (%s) failed: %s", job.id, job.kind, e)
            job.state = "canceled" if job.cancel_asked else "failed"
            job.message = "canceled" if job.cancel_asked else str(e)
        finally:
            job.finished, job.process = time.time(), None

    def _run_step(self, job: Job, command: list[str], out_dir: Path) -> dict:
        env = {**os.environ, progress.ENV: str(job.progress_file), "PYTHONUNBUFFERED": "1"}
        log = job.folder / "log.txt"
        with open(log, "a", encoding="utf-8") as stderr:
            job.process = subprocess.Popen(
                [sys.executable, "-m", "whisper_ft", *command, "-o", str(out_dir)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            stdout, _ = job.process.communicate()
        if job.cancel_asked:
            return {}
        if job.process.returncode != 0:
            raise RuntimeError(last_error(log) or f"exit status {job.process.returncode}")
        return json.loads(stdout)


def last_error(log: Path) -> str:
    """The command line's own error message ("error: ..."), or the log's last line."""
    lines = [line.strip() for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else ""


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
