"""Fine-tuning benchmark: does a recipe teach new words without forgetting general speech?

    .venv/bin/python -m bench.finetune                          # the default recipe, tiny.en
    .venv/bin/python -m bench.finetune --model base
    .venv/bin/python -m bench.finetune --sweep '{"learning_rate": 5e-4}' '{"lora_rank": 8}'

The new-vocabulary dataset is made here (tests/vocab.py): invented product names in varied
sentences, three espeak-ng voices, recordings of several sentences with a VTT each, as a
user uploads them. It reports, per recipe:
  - term recall on held-out sentences (new contexts, an unseen voice), before and after;
  - WER on real English speech from ../shared/speech (forgetting), before and after;
  - timestamp sanity of the tuned model's segments on the held-out sentences;
  - training time, seconds per optimizer step and audio seconds trained per second.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import fields
from pathlib import Path

from bench import shared_speech
from tests import vocab
from whisper_ft.audio import SAMPLE_RATE, load_audio
from whisper_ft.dataset import load_dataset
from whisper_ft.finetune import LoraSettings, TrainSettings, finetune, transcribe_examples
from whisper_ft.weights import hf_model
from whisper_ft.wer import word_error_rate

RESULTS = Path(__file__).resolve().parent / "results"
LORA_KEYS = {
    "lora_rank": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lora_layers": "layers",
}


def real_speech() -> tuple[list, list[str]]:
    """The English clips of ../shared/speech and their references (empty when absent)."""
    found = shared_speech.clips("en")
    return [audio for audio, _ in found], [text for _, text in found]


def recipe(overrides: dict) -> tuple[TrainSettings, LoraSettings]:
    train_keys = {f.name for f in fields(TrainSettings)}
    train = {k: v for k, v in overrides.items() if k in train_keys}
    lora = {LORA_KEYS.get(k, k): v for k, v in overrides.items() if k not in train_keys}
    if "target_modules" in lora:
        lora["target_modules"] = tuple(lora["target_modules"])
    return TrainSettings(language="en", **train), LoraSettings(**lora)


def timestamps_sane(model_dir: Path, utterances) -> bool:
    """Segments of the tuned model, served by CTranslate2, are ordered and inside the audio."""
    from whisper_ft.transcribe import Transcriber, TranscribeSettings

    transcriber = Transcriber(model_dir)
    for u in utterances:
        result = transcriber.transcribe(u.path, TranscribeSettings(language="en"))
        previous = 0.0
        for s in result.segments:
            if not (previous - 0.01 <= s.start < s.end <= result.duration + 0.05):
                return False
            previous = s.end
    return True


def score(model, processor, held, real, references) -> dict:
    texts = transcribe_examples(
        model, processor, [load_audio(u.path) for u in held], "en", "transcribe"
    )
    result = {"recall": 100 * vocab.term_recall(texts, held)}
    if real:
        hypotheses = transcribe_examples(model, processor, real, "en", "transcribe")
        result["real_wer"] = word_error_rate(references, hypotheses, "en")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--sweep", nargs="*", default=[], help="JSON recipes to compare")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from whisper_ft.export import export

    folder = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    train_zip = vocab.training_zip(
        folder, per_recording=4, terms=vocab.BENCH_TERMS, every_voice=False
    )
    held = vocab.held_out(
        folder, vocab.BENCH_TERMS, vocab.HELD_OUT_TEMPLATES, vocab.BENCH_HELD_OUT_VOICES
    )
    real, references = real_speech()
    base_dir = hf_model(args.model)
    dataset = load_dataset(train_zip, folder / "work", validation_fraction=0.1)
    seconds = sum(e.audio.size for e in dataset.train) / SAMPLE_RATE
    print(
        f"dataset: {len(dataset.train)} train / {len(dataset.validation)} validation windows, "
        f"{seconds / 60:.1f} min of training audio; real speech: {len(real)} clips"
    )

    base = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    before = score(base, WhisperProcessor.from_pretrained(base_dir), held, real, references)
    print(
        f"base {args.model}: recall {before['recall']:.0f}%, real-speech WER "
        f"{before.get('real_wer', float('nan')):.2f}%"
    )
    del base

    rows = []
    for overrides in [{}] + [json.loads(s) for s in args.sweep]:
        settings, lora = recipe(overrides)
        start = time.monotonic()
        model, processor, report = finetune(base_dir, dataset, settings, lora)
        train_s = time.monotonic() - start
        after = score(model, processor, held, real, references)
        archive = export(model, processor, base_dir, folder / "weights.tar", {"bench": True})
        from whisper_ft.archive import unpack_weights

        sane = timestamps_sane(unpack_weights(str(archive)) / "ct2", held)
        epochs = (
            report.steps * settings.batch_size * settings.gradient_accumulation / len(dataset.train)
        )
        row = {
            "recipe": overrides or "default",
            "recall_before": before["recall"],
            "recall_after": after["recall"],
            "real_wer_before": before.get("real_wer"),
            "real_wer_after": after.get("real_wer"),
            "timestamps_ok": sane,
            "train_s": train_s,
            "s_per_step": report.seconds / max(1, report.steps),
            "audio_s_per_s": seconds * epochs / report.seconds,
            "val_wer": [report.wer_before, report.wer_after],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"finetune-{args.model}.json"
    out.write_text(json.dumps(rows, indent=2))
    print("\n| recipe | recall before -> after | real-speech WER before -> after ", end="")
    print("| timestamps | training |")
    print("|---|---|---|---|---|")
    for r in rows:
        wer = (
            f"{r['real_wer_before']:.2f}% -> {r['real_wer_after']:.2f}%"
            if r["real_wer_before"] is not None
            else "n/a"
        )
        print(
            f"| {r['recipe']} | {r['recall_before']:.0f}% -> {r['recall_after']:.0f}% | {wer} | "
            f"{'ok' if r['timestamps_ok'] else 'BROKEN'} | {r['train_s']:.0f} s "
            f"({r['s_per_step']:.1f} s/step, {r['audio_s_per_s']:.1f} audio-s/s) |"
        )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
