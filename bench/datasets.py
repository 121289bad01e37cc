"""Datasets of many hours: peak memory and windows per second, 10 minutes against 5 hours.

    .venv/bin/python -m bench.datasets                    # 10 min and 5 h of speech
    .venv/bin/python -m bench.datasets --minutes 10 60 300

The speech is generated: twenty sentences spoken once by espeak-ng, then joined in a random
order with pauses into 10-minute recordings, each with its VTT, zipped as a user uploads
them (FLAC). Each size is measured in a process of its own, as training meets it:
`load_dataset` (checks, decoding, windows, split), then one epoch of batches built the way
the trainer builds them (each cue an example, speed perturbation, labels with timestamps,
log-mel features), without the model. It reports the load time, windows per second over
that epoch, and the peak memory (resident set) of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
RECORDING_MINUTES = 10
SENTENCES = (
    "The committee will meet again on Thursday to review the budget.",
    "Please send the final report to everyone before the end of the week.",
    "A light rain is expected this evening across most of the region.",
    "She opened the window and listened to the birds in the garden.",
    "Our train was delayed by forty minutes because of a signal fault.",
    "The museum has added a new room for photographs of the old harbour.",
    "He forgot his umbrella at the station and walked home in the rain.",
    "We need three more volunteers for the concert on Saturday night.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Most of the students finished the exam well before the bell rang.",
    "The bridge will be closed for repairs during the first week of May.",
    "Can you check whether the printer on the second floor is working?",
    "The farmers are hoping for a dry spell before the harvest begins.",
    "A small boat drifted slowly towards the lighthouse at the point.",
    "They moved into a quiet flat near the river last spring.",
    "The library stays open late on Wednesdays during the exam period.",
    "Turn left at the bakery and the school is on your right.",
    "The new software update fixed most of the problems we reported.",
    "Her brother plays the trumpet in the town's brass band.",
    "The doctor said the results would be ready by Monday morning.",
)


def make_zip(minutes: float, folder: Path) -> Path:
    """`minutes` of speech as 10-minute FLAC recordings with VTTs, zipped."""
    from tests.speech import silence
    from tests.vocab import speak_all
    from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
    from whisper_ft.subtitles import Cue, write_vtt

    spoken = speak_all(list(SENTENCES), folder / "spoken", ("en-us", 150))
    clips = [(load_audio(u.path), u.text) for u in spoken]
    pause = silence(0.6)
    rng = random.Random(0)
    zip_path = folder / f"speech-{minutes:g}min.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as z:
        for r in range(max(1, round(minutes / RECORDING_MINUTES))):
            parts, cues, t = [], [], 0.0
            while t < min(minutes, RECORDING_MINUTES) * 60:
                audio, text = rng.choice(clips)
                cues.append(Cue(round(t, 3), round(t + audio.size / SAMPLE_RATE, 3), text))
                parts += [audio, pause]
                t += (audio.size + pause.size) / SAMPLE_RATE
            path = folder / f"recording{r:03d}.flac"
            write_audio(path, np.concatenate(parts))
            z.write(path, path.name)
            z.writestr(f"recording{r:03d}.vtt", write_vtt(cues))
            path.unlink()
    return zip_path


def measure(zip_path: Path) -> dict:
    """In this process: load the dataset, then build one epoch of training batches."""
    from transformers import WhisperProcessor

    from whisper_ft.dataset import load_dataset, sentences
    from whisper_ft.finetune import Collator, Labeller, perturb_speed
    from whisper_ft.weights import hf_model

    processor = WhisperProcessor.from_pretrained(hf_model("tiny.en"))
    with tempfile.TemporaryDirectory() as work:
        began = time.monotonic()
        dataset = load_dataset(zip_path, Path(work), validation_fraction=0.1)
        loaded = time.monotonic() - began
        labeller = Labeller(processor.tokenizer, "en", "transcribe", multilingual=False)
        collator = Collator(processor.feature_extractor, 50256, 50257)
        examples = [s for e in dataset.train for s in sentences(e)]
        rng = random.Random(0)
        rng.shuffle(examples)
        began = time.monotonic()
        for i in range(0, len(examples), 8):
            chosen = [perturb_speed(e, 0.15, rng) for e in examples[i : i + 8]]
            collator([e.audio for e in chosen], [labeller.labels(e, True) for e in chosen])
        built = time.monotonic() - began
    return {
        "hours": round(dataset.seconds / 3600, 2),
        "windows": len(dataset.train) + len(dataset.validation),
        "examples": len(examples),
        "load_s": round(loaded, 1),
        "examples_per_s": round(len(examples) / built, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 300])
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one size, in-process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            zip_path = make_zip(minutes, Path(tmp))
            done = subprocess.run(
                [sys.executable, "-m", "bench.datasets", "--measure", str(zip_path)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            rows.append({"minutes": minutes, **json.loads(done.stdout.strip().splitlines()[-1])})
            zip_path.unlink()
    print(
        "| speech | windows | cue examples | load | examples/s (an epoch of batches) | peak RSS |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['minutes']:g} min | {r['windows']} | {r['examples']} | {r['load_s']} s | "
            f"{r['examples_per_s']} | {r['peak_mb']} MB |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "datasets.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
