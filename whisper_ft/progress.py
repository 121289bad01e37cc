"""What long work (transcription, training) tells whoever watches: logs, and progress as
JSON lines.

The entry points (command line, predictor, trainer) set up logging once, with
`configure_logging`: time, level, module and message on stderr, which Cog's logs read.

A process started with WHISPER_FT_PROGRESS=<file> appends one JSON object per event to that
file: the studio starts the command line this way and shows the events in its page. Without
the variable nothing is written; the logs say the same in words.

    {"event": "transcribe", "done": 42.0, "total": 300.0}
    {"event": "step", "step": 3, "steps": 40, "epoch": 1, "loss": 1.23, "eta": 95.0}
    {"event": "epoch", "epoch": 1, "loss": 1.1, "wer": 12.5}
    {"event": "kept", "epoch": 2, "wer_before": 20.0, "wer_after": 10.0}
"""

from __future__ import annotations

import json
import logging
import os
import time

ENV = "WHISPER_FT_PROGRESS"
ERROR_FILE_ENV = "WHISPER_FT_ERROR_FILE"  # where a failed command line also writes its error
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

__all__ = [
    "ENV",
    "ERROR_FILE_ENV",
    "LOG_FORMAT",
    "configure_logging",
    "emit",
    "report",
    "report_error",
]


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr in LOG_FORMAT (once: a later call keeps the first set-up), without
    faster-whisper's own lines below warnings."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)


def emit(event: str, **fields) -> None:
    """Append `{"event": event, "time": now, **fields}` to $WHISPER_FT_PROGRESS, if set."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def report(log: logging.Logger, event: str, message: str, *args, **fields) -> None:
    """Progress said both ways: `message % args` to the log, `fields` as an `event`."""
    log.info(message, *args)
    emit(event, **fields)


def report_error(message: str) -> None:
    """Write a failed run's error to $WHISPER_FT_ERROR_FILE, if set: for the parent that
    started the run (train.py's several processes) to raise it as its own."""
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(message)
