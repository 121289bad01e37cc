"""Memory on very long audio: a 3-hour file is streamed, never held whole.

    .venv/bin/python -m bench.long_audio               # 3 hours, tiny.en
    .venv/bin/python -m bench.long_audio --hours 0.25

Writes a FLAC of the given length (the bundled sample clip every five minutes, silence in
between), transcribes it in a fresh process with the Predictor's engine, and reports the
process's peak memory against a 10-minute file made the same way: streaming means the two
peaks are about equal, while the 3 hours as float32 alone would be 660 MiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from whisper_ft.audio import SAMPLE_RATE, load_audio

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
EVERY_SECONDS = 300

MEASURE = """
import json, resource, sys, time
from whisper_ft.transcribe import Transcriber, TranscribeSettings
from whisper_ft.weights import ct2_model
transcriber = Transcriber(ct2_model(sys.argv[2]))
start = time.perf_counter()
result = transcriber.transcribe(sys.argv[1], TranscribeSettings(language="en"))
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "duration": result.duration,
    "segments": len(result.segments),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def write_long(path: Path, hours: float) -> None:
    clip = load_audio(ROOT / "samples" / "sample.flac")
    block = np.zeros(EVERY_SECONDS * SAMPLE_RATE, np.float32)
    block[: clip.size] = clip
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        for _ in range(int(hours * 3600 / EVERY_SECONDS)):
            f.write(block)


def measure(path: Path, model: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), model],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="long-audio-"))
    rows = {}
    for name, hours in (("10 min", 10 / 60), (f"{args.hours:g} h", args.hours)):
        path = folder / f"{name.replace(' ', '')}.flac"
        write_long(path, hours)
        rows[name] = measure(path, args.model)
        print(name, json.dumps(rows[name]), flush=True)
        path.unlink()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "long-audio.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
