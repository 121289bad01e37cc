"""Adapting to one real voice: train on the first part of a real recording, score the rest.

    .venv/bin/python -m bench.adapt                    # tiny.en
    .venv/bin/python -m bench.adapt --model base --train-seeds 1

The recording is the Raven reading of ../shared/longform (one reader, 4.8 min, hand-cleaned
line timings). Its first --train-share of lines makes the training zip as a user builds it
after correcting a transcript: the audio up to the end of those lines and a VTT of them,
with the text as read. The rest of the recording is transcribed as the Predictor serves it,
before and after training, and scored against its lines (in-domain WER); the English clips
of ../shared/speech are scored the same way (general speech: what the run made worse).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from bench import shared_speech
from bench.finetune import as_run, recipe, served
from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
from whisper_ft.dataset import Dataset, load_dataset, read_transcript
from whisper_ft.finetune import finetune
from whisper_ft.subtitles import Cue, write_vtt
from whisper_ft.transcribe import Transcriber, TranscribeSettings
from whisper_ft.weights import ct2_model, hf_model
from whisper_ft.wer import word_error_rate

LONGFORM = shared_speech.SHARED / "longform"
RECORDING = "raven_stanzas03-15"
RESULTS = Path(__file__).resolve().parent / "results"


def split_recording(folder: Path, share: float) -> tuple[Path, Path, str]:
    """(training zip, the rest of the audio, the rest's reference text)."""
    audio = load_audio(LONGFORM / "audio" / f"{RECORDING}.flac")
    lines = read_transcript(LONGFORM / "timing" / f"{RECORDING}.lines.vtt")
    cut = round(len(lines) * share)
    taught, rest = lines[:cut], lines[cut:]
    boundary = (taught[-1].end + rest[0].start) / 2
    head = folder / f"{RECORDING}-part1.flac"
    write_audio(head, audio[: round(boundary * SAMPLE_RATE)])
    cues = [Cue(c.start, c.end, " ".join(c.text.split())) for c in taught]
    head.with_suffix(".vtt").write_text(write_vtt(cues), encoding="utf-8")
    train_zip = folder / "train.zip"
    with zipfile.ZipFile(train_zip, "w") as z:
        z.write(head, head.name)
        z.write(head.with_suffix(".vtt"), head.with_suffix(".vtt").name)
    tail = folder / f"{RECORDING}-part2.flac"
    write_audio(tail, audio[round(boundary * SAMPLE_RATE) :])
    return train_zip, tail, " ".join(" ".join(c.text.split()) for c in rest)


def score(model_dir: Path, tail: Path, reference: str, real) -> dict:
    """In-domain WER on the rest of the recording, general WER on real speech, as served."""
    transcriber, settings = Transcriber(model_dir), TranscribeSettings(language="en")
    heard = transcriber.transcribe(tail, settings).text
    began = time.monotonic()
    general = [transcriber.transcribe(path, settings).text for path, _ in real]
    return {
        "in_domain_wer": word_error_rate([reference], [heard], "en"),
        "in_domain_text": heard,
        "general_wer": word_error_rate([text for _, text in real], general, "en"),
        "general_s": time.monotonic() - began,
    }


def check_adaptable(overrides: dict) -> None:
    """Refuse a recipe the reading cannot train: without the replay's cross-entropy, the
    examples that write none of the run's terms (all of the reading's) learn nothing."""
    if not recipe(overrides)[2].replay_cross_entropy:
        raise ValueError("replay_cross_entropy=false needs the run's own terms")


@dataclass
class RealVoice:
    """The adaptation's data, made and scored untrained once: the training zip's dataset,
    the rest of the recording with its reference, the real-speech clips, and the base
    model's scores (`before`)."""

    dataset: Dataset
    tail: Path
    reference: str
    real: list
    before: dict

    @classmethod
    def make(cls, folder: Path, model: str, share: float = 0.6) -> RealVoice:
        folder.mkdir(parents=True, exist_ok=True)
        train_zip, tail, reference = split_recording(folder, share)
        real = shared_speech.files("en", shared_speech.GENERAL)
        dataset = load_dataset(train_zip, folder / "work", validation_fraction=0.1)
        return cls(dataset, tail, reference, real, score(ct2_model(model), tail, reference, real))

    def adapt(self, base_dir: Path, overrides: dict, folder: Path, general=None) -> dict:
        """Train a recipe (bench.finetune's JSON overrides, its seed included) on the first
        part and score the result as served: in-domain and general WER, training time.
        `general`: the layers' input moments on real recordings, for a recipe whose
        change_moments needs them (bench.finetune's general_moments)."""
        start = time.monotonic()
        check_adaptable(overrides)
        settings, lora, research = recipe(overrides)
        model, processor, report = finetune(
            base_dir, self.dataset, settings, lora, hooks=research.hooks(general=general)
        )
        train_s = time.monotonic() - start
        ct2_dir = served(model, processor, base_dir, folder)
        after = score(ct2_dir, self.tail, self.reference, self.real)
        shutil.rmtree(ct2_dir.parent)
        return {
            "train_seed": settings.seed,
            "train_s": train_s,
            **after,
            "kept_epoch": report.best_epoch,
            "vocabulary": report.vocabulary,
            "as_run": as_run(report),
            "validation_wer": [round(e["wer"], 2) for e in report.history if "wer" in e],
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--train-share", type=float, default=0.6)
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument(
        "--recipe",
        default="{}",
        help='JSON overrides of the default recipe, e.g. {"learning_rate": 1e-4}',
    )
    args = parser.parse_args()
    if not (LONGFORM / "audio").is_dir():
        parser.error(f"{LONGFORM} is absent: this benchmark reads its real recordings")
    if args.train_seeds < 1 or not 0.1 <= args.train_share <= 0.9:
        parser.error("--train-seeds must be at least 1 and --train-share within 0.1..0.9")
    logging.basicConfig(level=logging.WARNING)

    folder = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    voice = RealVoice.make(folder, args.model, args.train_share)
    base_dir = hf_model(args.model)
    minutes = sum(e.audio.size for e in voice.dataset.train) / SAMPLE_RATE / 60
    print(f"{RECORDING}: {minutes:.1f} min to train on, {len(voice.dataset.train)} windows")
    before = voice.before
    print(f"base {args.model}: {json.dumps(before)}", flush=True)

    rows = []
    for seed in range(args.train_seeds):
        rows.append(voice.adapt(base_dir, {**json.loads(args.recipe), "seed": seed}, folder))
        print(json.dumps(rows[-1]), flush=True)

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"adapt-{args.model}.json"
    out.write_text(json.dumps({"recipe": args.recipe, "base": before, "rows": rows}, indent=2))
    print(f"\n| {args.model} | in-domain WER (rest of the reading) | general WER | training |")
    print("|---|---|---|---|")
    print(f"| before | {before['in_domain_wer']:.2f}% | {before['general_wer']:.2f}% | - |")
    for r in rows:
        print(
            f"| seed {r['train_seed']} | {r['in_domain_wer']:.2f}% | {r['general_wer']:.2f}% "
            f"| {r['train_s']:.0f} s |"
        )
    if len(rows) > 1:
        print(
            f"| mean | {mean(r['in_domain_wer'] for r in rows):.2f}% "
            f"| {mean(r['general_wer'] for r in rows):.2f}% "
            f"| {mean(r['train_s'] for r in rows):.0f} s |"
        )
    shutil.rmtree(folder, ignore_errors=True)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
