"""Fine-tuning benchmark: does a recipe teach new words without forgetting general speech?

    .venv/bin/python -m bench.finetune                          # the default recipe, tiny.en
    .venv/bin/python -m bench.finetune --model base --train-seeds 1
    .venv/bin/python -m bench.finetune --voices natural          # a neural voice, not espeak-ng
    .venv/bin/python -m bench.finetune --sweep '{"learning_rate": 5e-4}' '{"lora_rank": 8}'
    .venv/bin/python -m bench.finetune --every-epoch --no-default --sweep '{"lora_layers": "all"}'

The new-vocabulary dataset is made here (tests/vocab.py): invented product names in varied
sentences, four espeak-ng voices, recordings of several sentences with a VTT each, as a
user uploads them; or (--voices natural) the same sentences in a neural voice (Piper's
en_US joe), one voice at several paces, which stock Whisper hears far better than espeak-ng.
Every model is scored as the Predictor serves it (merged, CTranslate2, beam 5, temperature
fallback, one decoding pass, no prompt: the weights alone), with the mean of --seeds seeded
loads, since the fallback samples; the first seed also reads with the run's vocabulary as a
prompt to every window (the opt-in `use_vocabulary`). Each recipe is trained from
--train-seeds seeds (3 by default) and also summarised as the mean and range of its
trainings. It reports, per recipe:
  - term recall on held-out sentences (new contexts, unseen voices), before and after, and
    the held-out sentences' WER, since recall also credits a reading that merely lists names;
  - WER on real English speech (forgetting): the English clips of ../shared/speech and
    ../shared/speech-extra, before and after;
  - what the opt-in prompt adds: recall and real-speech WER with the vocabulary;
  - the serving time ratio: the tuned model's decoding time on the real clips over the base
    model's, same settings;
  - timestamp sanity of the tuned model's segments on the held-out sentences;
  - training time, seconds per optimizer step and audio seconds trained per second;
  - the real-voice adaptation of bench.adapt, trained from the same recipe and seed (unless
    --no-adapt): WER on the rest of one real reading and on the real clips, before and after;
  - with --every-epoch, recall and real-speech WER after every epoch as well (the trade-off
    along the way: slower, as each epoch is scored).
  - with --soup, the same of the mean of each recipe's trained weights over its training
    seeds, and the clips it reads worse: whether averaging trainings removes what each
    forgets.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import fields
from pathlib import Path
from statistics import mean

from bench import shared_speech
from bench.research import Research
from tests import vocab
from whisper_ft.archive import merge, write_models
from whisper_ft.audio import SAMPLE_RATE
from whisper_ft.dataset import load_dataset
from whisper_ft.finetune import (
    LORA_MODULES,
    Collator,
    Labeller,
    LoraSettings,
    TrainSettings,
    finetune,
    input_moments,
    is_multilingual,
    learn_vocabulary,
    scale_change,
    term_token_ids,
)
from whisper_ft.transcribe import Transcriber, TranscribeSettings
from whisper_ft.vocabulary import as_hotwords
from whisper_ft.weights import ct2_model, hf_model
from whisper_ft.wer import word_error_rate

RESULTS = Path(__file__).resolve().parent / "results"


def recipe(overrides: dict) -> tuple[TrainSettings, LoraSettings, Research]:
    """A sweep's JSON: fields of TrainSettings, LoraSettings (as training inputs name them)
    and bench/research.py's options."""
    train_keys = {f.name for f in fields(TrainSettings)}
    research_keys = {f.name for f in fields(Research)}
    train = {k: v for k, v in overrides.items() if k in train_keys}
    research = {k: v for k, v in overrides.items() if k in research_keys}
    lora = {
        k.removeprefix("lora_"): v  # as train.py's inputs name them
        for k, v in overrides.items()
        if k not in train_keys and k not in research_keys
    }
    if "target_modules" in lora:
        lora["target_modules"] = tuple(lora["target_modules"])
    settings, research = TrainSettings(language="en", **train), Research(**research)
    if research.change_moments != "training" and settings.change_weight == 0:
        raise ValueError("change_moments measures change_weight's penalty: give change_weight")
    return settings, LoraSettings(**lora), research


def as_run(report) -> dict:
    """The recipe's inputs that follow the data (fit_recipe), as the run used them."""
    return {
        "target_modules": list(report.lora.target_modules),
        "layers": report.lora.layers,
        "encoder_scale": report.lora.encoder_scale,
        "learning_rate": report.settings.learning_rate,
        "change_weight": report.settings.change_weight,
    }


def served(model, processor, base_dir: Path, folder: Path) -> Path:
    """The model as the Predictor serves it: LoRA merged (into a copy, so training can go
    on), converted to CTranslate2; returns the folder to serve from."""
    return serve_merged(merge(copy.deepcopy(model)), processor, base_dir, folder)


def serve_merged(merged, processor, base_dir: Path, folder: Path) -> Path:
    """A merged model converted to CTranslate2 in a folder of its own under `folder`;
    returns the folder to serve from (remove its parent when done)."""
    root = Path(tempfile.mkdtemp(prefix="served-", dir=folder))
    return write_models(merged, processor, base_dir, root)


def soup(models: list):
    """The mean of merged models of one architecture (a "model soup", Wortsman et al.,
    2022): the base weights plus the mean of the trainings' changes. What every training
    learned stays; what one training's seed made of it alone is averaged down."""
    import torch

    mixed = copy.deepcopy(models[0])
    states = [m.state_dict() for m in models]
    with torch.no_grad():
        for name, weights in mixed.state_dict().items():
            if weights.is_floating_point():
                weights.copy_(torch.stack([s[name] for s in states]).mean(dim=0))
    return mixed


# With --parts: the kept change scaled in the encoder and in the decoder before merging, (1, 1)
# being the model as kept (its encoder's change already at lora_encoder_scale: add
# {"lora_encoder_scale": 1} to the recipe to scale the change as trained): where what is
# learned, and what is forgotten, sits.
PARTS = ((0.0, 1.0), (0.5, 1.0), (1.0, 0.5), (1.0, 0.0))


def part(text: str) -> tuple[float, float]:
    """An --parts pair, "ENCODER,DECODER": the factors of each part's change."""
    try:
        encoder, decoder = (float(factor) for factor in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two factors, e.g. 0.8,1") from None
    return encoder, decoder


def scaled(model, encoder: float, decoder: float):
    """A copy of the LoRA model with the change of its encoder's and its decoder's adapters
    scaled (scale_change)."""
    model = copy.deepcopy(model)
    scale_change(model, encoder, decoder)
    return model


def sane(transcript) -> bool:
    """Segments are ordered, non-empty and inside the audio."""
    previous = 0.0
    for s in transcript.segments:
        if not (previous - 0.01 <= s.start < s.end <= transcript.duration + 0.05):
            return False
        previous = s.end
    return True


# The tuned model read besides as served (the weights alone, one pass): with its taught words
# as a prompt to every window (the opt-in `use_vocabulary`).
OTHER_READINGS = ("with_vocabulary",)


def score(ct2_dir: Path, vocabulary, held, real, seeds: int, natural=()) -> dict:
    """What a user of the served model gets (CTranslate2, the Predictor's default decoding:
    beam 5, temperature fallback, `vocabulary` served as the Predictor serves it): held-out
    term recall, timestamp sanity, real-speech WER, held-out sentence WER; and, first seed
    only, the same of the weights alone (no vocabulary) and of the vocabulary as a prompt
    to every window (hotwords, as served before windows were read again without it), and
    the recall on `natural`: the held-out sentences in a natural voice never trained on.

    A window whose decoding fails falls back to sampling, so a second process can read the
    same audio differently (real-speech WER moved by up to 0.9 points between processes):
    recall and WER are means over `seeds` seeded loads of the model, with their range."""
    import ctranslate2

    settings = TranscribeSettings(language="en")
    readings = {  # OTHER_READINGS, scored on the first seed
        "with_vocabulary": TranscribeSettings(language="en", hotwords=as_hotwords(vocabulary)),
    }

    def real_wer(
        transcriber, reading: TranscribeSettings, timed: str | None = None
    ) -> tuple[float, list[str]]:
        """The WER of the real-speech clips, and what each one read."""
        began = time.monotonic()
        hypotheses = [transcriber.transcribe(path, reading).text for path, _ in real]
        if timed:  # decoding time of the real-speech clips, to compare the readings' cost
            result[timed] = time.monotonic() - began
        return word_error_rate([text for _, text in real], hypotheses, "en"), hypotheses

    recalls, wers, result = [], [], {"timestamps_ok": True}
    for seed in range(seeds):
        ctranslate2.set_random_seed(seed)  # seeds the sampling of the model loaded next
        transcriber = Transcriber(ct2_dir)
        transcripts = [transcriber.transcribe(u.path, settings) for u in held]
        texts = [t.text for t in transcripts]
        recalls.append(100 * vocab.term_recall(texts, held))
        result["timestamps_ok"] &= all(sane(t) for t in transcripts)
        if seed == 0:
            result["missed"] = misses(texts, held)
            # Recall credits a transcript that spells the name anywhere, even a looping list
            # of names; the held-out sentences' WER shows such readings.
            result["held_wer"] = word_error_rate([u.text for u in held], texts, "en")
            if natural:
                heard = [transcriber.transcribe(u.path, settings).text for u in natural]
                result["recall_natural"] = 100 * vocab.term_recall(heard, natural)
                result["missed_natural"] = misses(heard, natural)
            for name, reading in readings.items() if vocabulary else ():
                other = [transcriber.transcribe(u.path, reading).text for u in held]
                result[f"recall_{name}"] = 100 * vocab.term_recall(other, held)
                result[f"held_wer_{name}"] = word_error_rate([u.text for u in held], other, "en")
                if real:
                    result[f"real_wer_{name}"], _ = real_wer(transcriber, reading, f"real_s_{name}")
        if real:
            wer, hypotheses = real_wer(
                transcriber, settings, "real_s_served" if seed == 0 else None
            )
            wers.append(wer)
            if seed == 0:  # what each clip read, to see what training changed (read_worse)
                result["real_readings"] = hypotheses
    result["recall"], result["recall_range"] = mean(recalls), [min(recalls), max(recalls)]
    if wers:
        result["real_wer"], result["real_wer_range"] = mean(wers), [min(wers), max(wers)]
    return result


def read_worse(real, before: dict, after: dict) -> list[dict]:
    """The real-speech clips the trained model reads with more errors than the base model:
    where the forgetting of the general WER lies (reference, and both readings)."""
    worse = []
    for (_, text), was, now in zip(
        real, before.get("real_readings", ()), after.get("real_readings", ()), strict=False
    ):
        if word_error_rate([text], [now], "en") > word_error_rate([text], [was], "en"):
            worse.append({"reference": text, "before": was, "after": now})
    return worse


def printable(result: dict) -> str:
    """A score as one log line, without the per-clip readings (they are in the JSON file)."""
    return json.dumps({k: v for k, v in result.items() if k != "real_readings"})


def misses(texts: list[str], utterances) -> list[str]:
    """The transcripts that do not spell their sentence's term."""
    return [t for t, u in zip(texts, utterances, strict=True) if not vocab.term_recall([t], [u])]


SPREAD = (
    "recall_after",
    "recall_natural_after",
    "real_wer_after",
    "held_wer_after",
    "recall_after_with_vocabulary",
    "real_wer_after_with_vocabulary",
    "serving_ratio",
    "train_s",
    "in_domain_wer_after",
    "adapt_general_wer_after",
)


def across_seeds(rows: list[dict]) -> list[dict]:
    """Each recipe's trainings (one per seed) as mean, low, high of its figures: training
    from another seed moves real-speech WER by more than most recipes differ."""
    recipes: dict[str, list[dict]] = {}
    for r in rows:
        recipes.setdefault(json.dumps(r["recipe"]), []).append(r)
    summary = []
    for runs in recipes.values():
        entry = {"recipe": runs[0]["recipe"], "train_seeds": [r["train_seed"] for r in runs]}
        for key in SPREAD:
            values = [r[key] for r in runs if r[key] is not None]
            entry[key] = [mean(values), min(values), max(values)] if values else None
        entry["timestamps_ok"] = all(r["timestamps_ok"] for r in runs)
        summary.append(entry)
    return summary


def raven_zip(folder: Path) -> Path:
    """A general_data zip: the Raven reading of ../shared/longform and its line timings."""
    from bench.adapt import LONGFORM, RECORDING

    path = folder / "general.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.write(LONGFORM / "audio" / f"{RECORDING}.flac", f"{RECORDING}.flac")
        z.write(LONGFORM / "timing" / f"{RECORDING}.lines.vtt", f"{RECORDING}.vtt")
    return path


def self_read_zip(folder: Path, model: str) -> Path:
    """A general_data zip with no transcript written by anyone: the base model's own reading
    (the `dataset` task, as served) of the recordings of ../shared/longform other than the
    Raven, which bench.adapt adapts to. It is what a user makes from any everyday recordings
    they have, with `task=dataset`."""
    from bench.adapt import LONGFORM, RECORDING
    from whisper_ft.outputs import run_task

    transcriber, settings = Transcriber(ct2_model(model)), TranscribeSettings(language="en")
    made = folder / "self-read"
    made.mkdir()
    path = folder / "general.zip"
    with zipfile.ZipFile(path, "w") as z:
        for audio in sorted((LONGFORM / "audio").glob("*.flac")):
            if audio.stem == RECORDING:
                continue
            clips = run_task(transcriber, audio, "dataset", settings, [], made).files["dataset"]
            with zipfile.ZipFile(clips) as part:
                for name in part.namelist():
                    z.writestr(name, part.read(name))
    return path


def general_moments(folder: Path, model: str, base, processor) -> dict:
    """The input moments of the base model's adaptable layers on real recordings, for
    bench/research.py's change_moments: the base model's own reading of the longform
    recordings other than the Raven (self_read_zip), read, not replayed."""
    made = folder / "moments"
    made.mkdir()
    data = load_dataset(self_read_zip(made, model), made / "work", validation_fraction=0.0)
    labeller = Labeller(processor.tokenizer, "en", "transcribe", is_multilingual(base))
    examples = [*data.train, *data.validation]
    return input_moments(
        base, Collator.for_model(processor, base), labeller, examples, LORA_MODULES
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--sweep", nargs="*", default=[], help="JSON recipes to compare")
    parser.add_argument("--no-default", action="store_true", help="run only the --sweep recipes")
    parser.add_argument("--every-epoch", action="store_true", help="score after every epoch")
    parser.add_argument(
        "--parts",
        nargs="*",
        type=part,
        help="also score the kept change with its encoder and decoder parts scaled: "
        "ENCODER,DECODER factors (1,1 is the model as kept); none given: PARTS",
    )
    parser.add_argument(
        "--soup",
        action="store_true",
        help="also score each recipe's merged weights averaged over its training seeds (soup)",
    )
    # Trainings from other seeds differ far more than seeded scorings of one training
    # (BENCHMARKS.md), so a recipe is judged by the mean of three trainings by default.
    parser.add_argument("--seeds", type=int, default=1, help="scoring passes to average")
    parser.add_argument(
        "--train-seeds",
        type=int,
        default=3,
        help="trainings per recipe, from seeds s..s+N-1 (s: the recipe's seed, 0 unless given)",
    )
    parser.add_argument(
        "--voices",
        choices=sorted(vocab.BENCH_VOICES),
        default="espeak",
        help="who speaks the dataset: espeak-ng's voices, or a natural (neural) voice",
    )
    parser.add_argument(
        "--terms",
        choices=sorted(vocab.TERM_SETS),
        default="invented",
        help="what is taught: invented names and recent model names, or terms as users "
        "bring them (Mixtral 8x7B, GPT-4o, Llama 3.1 70B, ... and invented names)",
    )
    parser.add_argument(
        "--no-adapt",
        action="store_true",
        help="leave out the real-voice adaptation (bench.adapt) of each recipe and seed",
    )
    parser.add_argument(
        "--general",
        choices=("none", "raven", "self", "everyday", "rare"),
        default="none",
        help="general speech replayed in training and scored for the kept epoch "
        "(general_data): none, or the Raven reading of ../shared/longform (one real reader, "
        "4.8 min, with its line timings), or the base model's own reading of the other "
        "longform recordings (16.6 min: three dramatized chapters, several voices, and a "
        "LibriVox reader; no written transcript), or "
        "everyday sentences (no new names) in the training voices, or sentences of rare real "
        "words and names in the training voices",
    )
    args = parser.parse_args()
    if args.seeds < 1 or args.train_seeds < 1:
        parser.error("--seeds and --train-seeds must be at least 1")
    if args.soup and args.train_seeds < 2:
        parser.error("--soup averages a recipe's trainings: give --train-seeds 2 or more")
    if not args.no_adapt:
        from bench.adapt import check_adaptable

        try:  # before anything is scored, not after the first training
            for given in args.sweep:
                check_adaptable(json.loads(given))
        except ValueError as e:
            parser.error(f"{e} (the real-voice adaptation): add --no-adapt")
    logging.basicConfig(level=logging.WARNING)

    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    train_voices, held_out_voices = vocab.BENCH_VOICES[args.voices]
    folder = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    train_zip = vocab.training_zip(
        folder,
        per_recording=4,
        terms=vocab.TERM_SETS[args.terms],
        voices=train_voices,
        every_voice=False,
    )
    terms = vocab.TERM_SETS[args.terms]
    held = vocab.held_out(folder, terms, vocab.HELD_OUT_TEMPLATES, held_out_voices)
    # The same held-out sentences in a natural voice that training never hears (espeak-ng
    # training only: with --voices natural that voice is the training voice).
    natural = (
        vocab.held_out(
            folder / "natural", terms, vocab.HELD_OUT_TEMPLATES, vocab.NATURAL_HELD_OUT_VOICES
        )
        if args.voices == "espeak"
        else []
    )
    real = shared_speech.files("en", shared_speech.GENERAL)
    base_dir = hf_model(args.model)
    dataset = load_dataset(train_zip, folder / "work", validation_fraction=0.1)
    general = None
    if args.general == "raven":
        general = load_dataset(raven_zip(folder), folder / "general", validation_fraction=0.5)
    elif args.general == "self":
        general = load_dataset(
            self_read_zip(folder, args.model), folder / "general", validation_fraction=0.5
        )
    elif args.general in ("everyday", "rare"):
        texts = {"everyday": vocab.GENERAL_DATA_SENTENCES, "rare": vocab.RARE_WORD_SENTENCES}
        spoken = vocab.everyday_zip(folder / "everyday", train_voices, texts[args.general])
        general = load_dataset(spoken, folder / "general", validation_fraction=0.25)
    seconds = sum(e.audio.size for e in dataset.train) / SAMPLE_RATE
    print(
        f"dataset: {len(dataset.train)} train / {len(dataset.validation)} validation windows, "
        f"{seconds / 60:.1f} min of training audio ({args.voices} voices); "
        f"real speech: {len(real)} clips"
    )

    base = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    processor = WhisperProcessor.from_pretrained(base_dir)
    before = score(ct2_model(args.model), [], held, real, args.seeds, natural)
    print(f"base {args.model}: {printable(before)}", flush=True)
    # The vocabulary alone, without training: the base model reading the found words.
    words = learn_vocabulary(base, processor, dataset.train, "en", TrainSettings())
    prompted = score(ct2_model(args.model), words, held, real, args.seeds)
    print(f"base {args.model} + vocabulary: {printable(prompted)}", flush=True)
    recipes = ([] if args.no_default else [{}]) + [json.loads(s) for s in args.sweep]
    term_ids = term_token_ids(processor.tokenizer, words)
    general_inputs = None
    if any(recipe(given)[2].change_moments != "training" for given in recipes):
        general_inputs = general_moments(folder, args.model, base, processor)
    del base
    # Point 5 in the same table: each recipe and seed also adapts a model to one real reader
    # (bench.adapt), scored on the rest of the reading and on the real clips.
    voice = None
    if not args.no_adapt:
        from bench.adapt import LONGFORM, RealVoice

        if (LONGFORM / "audio").is_dir():
            voice = RealVoice.make(folder / "real-voice", args.model)
            print(f"real voice, base {args.model}: {json.dumps(voice.before)}", flush=True)
        else:
            print(f"{LONGFORM} is absent: no real-voice adaptation")

    rows, merged, soups = [], {}, []
    trainings = [
        (given, {**given, "seed": given.get("seed", 0) + k})
        for given in recipes
        for k in range(args.train_seeds)
    ]
    for given, overrides in trainings:
        settings, lora, research = recipe(overrides)
        trajectory = [{"epoch": 0, **before}]
        scoring = [0.0]  # seconds spent scoring epochs, left out of the training time

        def score_epoch(
            model, entry, report, trajectory=trajectory, scoring=scoring, processor=processor
        ):
            began = time.monotonic()
            ct2_dir = served(model, processor, base_dir, folder)
            found = score(ct2_dir, report.vocabulary, held, real, args.seeds, natural)
            shutil.rmtree(ct2_dir.parent)
            scoring[0] += time.monotonic() - began
            trajectory.append(
                {
                    "epoch": entry["epoch"],
                    "val_wer": entry.get("wer"),
                    "general_wer": entry.get("general_wer"),
                    **found,
                }
            )
            print(f"  {printable(trajectory[-1])}", flush=True)

        start = time.monotonic()
        model, processor, report = finetune(
            base_dir,
            dataset,
            settings,
            lora,
            general,
            hooks=research.hooks(
                term_ids,
                general_inputs,
                on_epoch=score_epoch if args.every_epoch else None,
            ),
        )
        train_s = time.monotonic() - start - scoring[0]
        report.seconds -= scoring[0]
        kept = merge(copy.deepcopy(model))
        ct2_dir = serve_merged(kept, processor, base_dir, folder)
        after = score(ct2_dir, report.vocabulary, held, real, args.seeds, natural)
        shutil.rmtree(ct2_dir.parent)
        if args.soup:
            merged.setdefault(json.dumps(given), []).append(kept)
        parts = []
        for encoder, decoder in (args.parts or PARTS) if args.parts is not None else ():
            ct2_dir = served(scaled(model, encoder, decoder), processor, base_dir, folder)
            found = score(ct2_dir, [], held, real, args.seeds, natural)
            shutil.rmtree(ct2_dir.parent)
            parts.append({"encoder": encoder, "decoder": decoder, **found})
            print(f"  parts {printable(parts[-1])}", flush=True)
        adapted = voice.adapt(base_dir, overrides, folder, general_inputs) if voice else {}
        epochs = (
            report.steps * settings.batch_size * settings.gradient_accumulation / len(dataset.train)
        )
        row = {
            "recipe": given or "default",
            "as_run": as_run(report),
            "general_data": args.general,
            "train_seed": settings.seed,
            "recall_before": before["recall"],
            "recall_after": after["recall"],
            "recall_natural_before": before.get("recall_natural"),
            "recall_natural_after": after.get("recall_natural"),
            "vocabulary": report.vocabulary,
            "real_wer_before": before.get("real_wer"),
            "real_wer_after": after.get("real_wer"),
            "recall_after_range": after["recall_range"],
            "real_wer_after_range": after.get("real_wer_range"),
            "recall_after_with_vocabulary": after.get("recall_with_vocabulary"),
            "real_wer_after_with_vocabulary": after.get("real_wer_with_vocabulary"),
            "held_wer_after_with_vocabulary": after.get("held_wer_with_vocabulary"),
            "real_decoding_s": {  # the real-speech clips read as served, and with the prompt
                name: after.get(f"real_s_{name}") for name in ("served", *OTHER_READINGS)
            },
            # Decoding time of the real-speech clips, tuned over base, same settings.
            "serving_ratio": after["real_s_served"] / before["real_s_served"] if real else None,
            "held_wer_before": before["held_wer"],
            "held_wer_after": after["held_wer"],
            "timestamps_ok": after["timestamps_ok"],
            # The real-voice adaptation: WER on the rest of the reading and on the real clips,
            # before and after its own training of the recipe.
            "in_domain_wer_before": voice.before["in_domain_wer"] if voice else None,
            "in_domain_wer_after": adapted.get("in_domain_wer"),
            "adapt_general_wer_before": voice.before["general_wer"] if voice else None,
            "adapt_general_wer_after": adapted.get("general_wer"),
            "adapt": adapted,
            "missed": after["missed"],
            "missed_natural": after.get("missed_natural"),
            "read_worse": read_worse(real, before, after),
            "train_s": train_s,
            "s_per_step": report.seconds / max(1, report.steps),
            "audio_s_per_s": seconds * epochs / report.seconds,
            "val_wer": [report.wer_before, report.wer_after],
            "general_wer": [report.general_wer_before, report.general_wer_after],
            "best_epoch": report.best_epoch,
            # The trainer's own scores of each epoch (validation and general_data WER), from
            # which it chose the kept one.
            "history": [
                {k: e.get(k) for k in ("epoch", "loss", "wer", "general_wer")}
                for e in report.history
            ],
            "every_epoch": trajectory[1:] and trajectory,
            "parts": parts,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    for given, models in merged.items():
        ct2_dir = serve_merged(soup(models), processor, base_dir, folder)
        found = score(ct2_dir, [], held, real, args.seeds, natural)
        shutil.rmtree(ct2_dir.parent)
        soups.append(
            {
                "recipe": json.loads(given) or "default",
                "trainings": len(models),
                **found,
                "read_worse": read_worse(real, before, found),
            }
        )
        print(f"soup of {len(models)}: {printable(soups[-1])}", flush=True)

    summary = across_seeds(rows) if args.train_seeds > 1 else []
    RESULTS.mkdir(exist_ok=True)
    voices = "" if args.voices == "espeak" else f"-{args.voices}"
    out = RESULTS / f"finetune-{args.model}{voices}.json"
    results = {"base": before, "base_with_vocabulary": prompted, "rows": rows, "soups": soups}
    out.write_text(json.dumps({**results, "across_training_seeds": summary}, indent=2))
    print("\n| recipe | recall (weights alone) | natural voice ", end="")
    print("| real-speech WER before -> after ", end="")
    print("| held-out WER | with use_vocabulary: recall, real WER | serving time ", end="")
    print("| timestamps | training | real voice: in-domain WER, general WER |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def seeded(row: dict) -> str:
        return f", seed {row['train_seed']}" if args.train_seeds > 1 else ""

    for r in rows:
        wer, ratio, prompted, heard, voiced = "n/a", "n/a", "-", "-", "-"
        if r["in_domain_wer_after"] is not None:
            voiced = (
                f"{r['in_domain_wer_before']:.2f}% -> {r['in_domain_wer_after']:.2f}%, "
                f"{r['adapt_general_wer_before']:.2f}% -> {r['adapt_general_wer_after']:.2f}%"
            )
        if r["recall_natural_after"] is not None:
            heard = f"{r['recall_natural_before']:.0f}% -> {r['recall_natural_after']:.1f}%"
        if r["real_wer_before"] is not None:
            wer = f"{r['real_wer_before']:.2f}% -> {r['real_wer_after']:.2f}%"
            ratio = f"{r['serving_ratio']:.2f}x"
        if r["recall_after_with_vocabulary"] is not None:
            prompted = f"{r['recall_after_with_vocabulary']:.1f}%"
            if r["real_wer_after_with_vocabulary"] is not None:
                prompted += f", {r['real_wer_after_with_vocabulary']:.2f}%"
        print(
            f"| {r['recipe']}{seeded(r)} | {r['recall_before']:.0f}% -> {r['recall_after']:.1f}% "
            f"| {heard} | {wer} | {r['held_wer_before']:.2f}% -> {r['held_wer_after']:.2f}% "
            f"| {prompted} "
            f"| {ratio} | {'ok' if r['timestamps_ok'] else 'BROKEN'} | {r['train_s']:.0f} s "
            f"({r['s_per_step']:.1f} s/step, {r['audio_s_per_s']:.1f} audio-s/s) | {voiced} |"
        )
    if summary:
        print(f"\nacross {args.train_seeds} training seeds, mean (range):")
        print("| recipe | " + " | ".join(SPREAD) + " | timestamps |")
        print("|---|" + "---|" * len(SPREAD) + "---|")
        for r in summary:
            cells = [
                f"{r[k][0]:.2f} ({r[k][1]:.2f}-{r[k][2]:.2f})" if r[k] else "-" for k in SPREAD
            ]
            sane_times = "ok" if r["timestamps_ok"] else "BROKEN"
            print(f"| {r['recipe']} | {' | '.join(cells)} | {sane_times} |")
    for r in soups:
        print(
            f"soup of {r['trainings']} trainings of {r['recipe']}: recall {r['recall']:.1f}% "
            f"({r.get('recall_natural', float('nan')):.1f}% natural), real-speech WER "
            f"{r.get('real_wer', float('nan')):.2f}%, held-out WER {r['held_wer']:.2f}%, "
            f"{len(r['read_worse'])} clips read worse"
        )
    for r in rows:
        if r["every_epoch"]:
            print(f"\n{r['recipe']}: | epoch | validation WER | recall | real-speech WER |")
            for t in r["every_epoch"]:
                print(
                    f"| {t['epoch']} | {t.get('val_wer', '-')} | {t['recall']:.0f}% "
                    f"({t.get('recall_natural', float('nan')):.0f}% natural) | "
                    f"{t.get('real_wer', float('nan')):.2f}% |"
                )
        if r["parts"]:
            print(
                f"\n{r['recipe']}{seeded(r)}: | encoder x | decoder x | recall | real-speech WER |"
            )
            for t in r["parts"]:
                print(
                    f"| {t['encoder']} | {t['decoder']} | {t['recall']:.1f}% "
                    f"({t.get('recall_natural', float('nan')):.1f}% natural) | "
                    f"{t['real_wer']:.2f}% |"
                )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
