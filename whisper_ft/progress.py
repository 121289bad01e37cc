"""Progress of long work (transcription, training) as JSON lines, for whoever watches.

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
import os
import time

ENV = "WHISPER_FT_PROGRESS"

__all__ = ["ENV", "emit"]


def emit(event: str, **fields) -> None:
    """Append `{"event": event, "time": now, **fields}` to $WHISPER_FT_PROGRESS, if set."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
