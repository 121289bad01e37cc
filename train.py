"""Cog trainer: fine-tune Whisper with LoRA on a zip of audio + VTT/SRT, return merged weights.

    python -m whisper_ft train -i train_data=@data.zip -i base_model=tiny.en
    COG_TRAIN_TYPE_STUB=train.py:train python -m cog.server.http --x-mode train

The zip holds audio files and transcripts paired by name (`talk1.mp3` + `talk1.vtt`, in any
folder). The result is one weights archive: serve it with COG_WEIGHTS=<archive or its URL>.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path as LocalPath

import torch
from cog import BaseModel, Input, Path

from whisper_ft import progress, runstate
from whisper_ft.archive import Manifest, write_archive
from whisper_ft.dataset import Dataset, DatasetError, DatasetLimits, fetch_zip, load_dataset
from whisper_ft.finetune import LoraSettings, RunFiles, TrainSettings, finetune, processes
from whisper_ft.inputs import check_inputs, inputs_declared, settings_from
from whisper_ft.transcribe import language_code
from whisper_ft.weights import hf_model

logger = logging.getLogger(__name__)
_last_work: LocalPath | None = None  # the previous training's folder (its archive)
PROCESSES_ENV = "WHISPER_FT_TRAIN_PROCESSES"  # processes for one training (default: GPUs)


class TrainingOutput(BaseModel):
    weights: Path


@inputs_declared(TrainSettings, (LoraSettings, "lora_"))
def train(
    train_data: Path = Input(description="Zip of audio files with matching .vtt/.srt files"),
    more_train_data: str = Input(
        default="",
        description="More training zips, comma-separated paths or http(s) URLs: their "
        "recordings are pooled with train_data's",
    ),
    validation_data: Path | None = Input(
        default=None, description="Optional zip for validation (default: split off train_data)"
    ),
    general_data: Path | None = Input(
        default=None,
        description="Optional zip of general speech (audio + .vtt/.srt, same language): "
        "replayed during training so the model keeps it, and scored before and after",
    ),
    base_model: str = Input(
        default="base",
        description="base, tiny.en, a Hugging Face id, or a weights archive URL to continue from",
    ),
    language: str = Input(default="auto", description="Language of the speech (auto: detect)"),
    task: str = Input(default="transcribe", choices=["transcribe", "translate"]),
    num_train_epochs: float = Input(
        default=5.0, ge=0.1, le=100.0, description="Passes over the training examples"
    ),
    max_steps: int = Input(
        default=0, ge=0, le=100000, description="Optimizer steps; 0: use num_train_epochs"
    ),
    learning_rate: float | None = Input(
        default=None,
        ge=1e-6,
        le=0.1,
        description="Peak LoRA learning rate (linear warm-up, linear decay); empty: 1e-3 "
        "where the run teaches new words (its vocabulary is not empty), 5e-4 where not",
    ),
    batch_size: int = Input(default=8, ge=1, le=256, description="Examples per forward pass"),
    gradient_accumulation: int = Input(default=1, ge=1, le=256),
    lora_rank: int = Input(default=32, ge=1, le=256, description="LoRA rank r"),
    lora_alpha: int = Input(
        default=64, ge=1, le=1024, description="LoRA scaling: updates times alpha / rank"
    ),
    lora_dropout: float = Input(
        default=0.05, ge=0.0, le=0.9, description="Dropout on the LoRA input"
    ),
    target_modules: str = Input(
        default="",
        description="Comma-separated, of: q_proj,k_proj,v_proj,out_proj,fc1,fc2; empty: all "
        "six where the run teaches new words, q_proj,v_proj where not",
    ),
    lora_layers: str | None = Input(
        default=None,
        choices=["acoustic", "all", "decoder", "encoder", "upper"],
        description="Layers LoRA adapts (all: the encoder and the decoder, which spells new "
        "words; acoustic: the encoder and the decoder's cross-attention only; upper: the "
        "decoder and the upper half of the encoder, quicker to train); empty: upper for tiny "
        "models where the run teaches new words, all otherwise",
    ),
    lora_encoder_scale: float | None = Input(
        default=None,
        ge=0.0,
        le=1.0,
        description="Fraction of the encoder's learned change kept once trained (1: as "
        "trained; lower: the encoder nearer the base model's, which reads general speech "
        "better and spells less); empty: 0.9 for tiny models where the run teaches new "
        "words, 1 otherwise",
    ),
    timestamp_fraction: float = Input(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of examples trained with timestamps",
    ),
    sentences: bool = Input(
        default=True,
        description="Train on each cue as an example of its own (many short examples, which "
        "put new words into the weights); false: on windows of up to 30 s",
    ),
    speed_perturbation: float = Input(
        default=0.15,
        ge=0.0,
        le=0.3,
        description="Play windows at 1 - x, 1 or 1 + x times their speed (0: off)",
    ),
    vocabulary: str = Input(
        default="",
        description="Comma-separated words or names the run teaches, listed in the weights' "
        "manifest (a request reads them as hotwords with use_vocabulary); the words the base "
        "model missed in your transcripts are added automatically",
    ),
    learn_vocabulary: bool = Input(
        default=True,
        description="Find the words the base model missed in your transcripts and list them "
        "in the manifest with the given vocabulary",
    ),
    hold_weight: float = Input(
        default=1.0,
        ge=0.0,
        le=100.0,
        description="Pull toward the base model's own predictions on every word but the "
        "vocabulary's (and on all of general_data): the new words are learned, what the base "
        "model already reads is held. 1 with general_data keeps general speech closest; "
        "0: off",
    ),
    change_weight: float | None = Input(
        default=None,
        ge=0.0,
        le=100000.0,
        description="Penalty on how much each adapted layer's output moves on the training "
        "speech outside the vocabulary's words (and on general_data), measured on the base "
        "model first: what is taught goes into directions the rest of the speech does not "
        "use. 0: off; empty: 1000 where the run teaches new words, 0 where not",
    ),
    validation_fraction: float = Input(default=0.1, ge=0.0, le=0.5),
    skip_bad_files: bool = Input(
        default=False, description="Skip unpaired or broken files with a warning instead of failing"
    ),
    save_adapter: bool = Input(default=False, description="Also include the LoRA adapter alone"),
    max_dataset_hours: float = Input(
        default=100.0,
        ge=0.01,
        le=10000.0,
        description="Most audio in all the training zips together, in hours (decoded samples "
        "take about 230 MB of disk an hour while training)",
    ),
    max_recording_hours: float = Input(
        default=4.0, ge=0.01, le=100.0, description="Longest recording, in hours"
    ),
    max_unpacked_gb: float = Input(
        default=20.0,
        ge=0.01,
        le=10000.0,
        description="Most bytes a zip may unpack to (and a downloaded zip may have), in GiB",
    ),
    max_files: int = Input(
        default=50000, ge=1, le=10000000, description="Most files in a training zip"
    ),
    state_dir: str = Input(
        default="",
        description="Folder to keep the run state in (LoRA weights, optimizer, schedule, data "
        "position, random state), saved after every epoch and when the run is canceled, so "
        "that resume_from can continue it; empty: not kept, unless resuming",
    ),
    resume_from: str = Input(
        default="",
        description="The state_dir of an earlier, killed or canceled run with the same data "
        "and settings: continue it to the result it would have reached (its state goes on "
        "being saved there unless state_dir names another folder)",
    ),
    seed: int = Input(default=0, ge=0, le=2147483647),
) -> TrainingOutput:
    args = check_inputs(train, dict(locals()))
    # Started by `accelerate launch` or `torchrun`, every process trains; only the main one
    # logs and writes the archive.
    main_process = processes().is_main_process
    progress.configure_logging()
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)
    language = language_code(args["language"])
    settings = settings_from(TrainSettings, args, language=language).validate()
    lora = settings_from(LoraSettings, args, prefix="lora_").validate()
    if args["resume_from"]:
        runstate.read_record(LocalPath(args["resume_from"]))  # fails now, before any work
    base_dir = hf_model(args["base_model"])
    work = new_work_folder()
    try:
        wanted = wanted_processes()
        if wanted > 1:  # Cog calls train() in one process: start one per GPU, as torchrun does
            return TrainingOutput(weights=Path(launch(args, wanted, work)))
        dataset, general = load_data(args, work)
        model, processor, report = finetune(
            base_dir, dataset, settings, lora, general, run_files=run_files(args)
        )
        for decoded in ("data", "general"):  # the recordings' samples, read while training
            shutil.rmtree(work / decoded, ignore_errors=True)
        if not main_process:
            shutil.rmtree(work, ignore_errors=True)
            return None  # the main process returns the archive
        manifest = Manifest(
            base_model=args["base_model"],
            train=report.settings,
            lora=report.lora,
            dataset=dataset_summary(dataset),
            language=report.language,
            wer_before=report.wer_before,
            wer_after=report.wer_after,
            general_data=general_summary(general, report),
            vocabulary=report.vocabulary,
            best_epoch=report.best_epoch,
            history=report.history,
            training_seconds=round(report.seconds, 1),
        )
        archive = write_archive(
            model,
            processor,
            base_dir,
            work / "weights.tar",
            manifest,
            save_adapter=args["save_adapter"],
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return TrainingOutput(weights=Path(archive))


def new_work_folder() -> LocalPath:
    """This run's folder. Cog reads the archive after train() returns; the previous run's
    folder goes now, and this run's at once if it fails, so a failed or repeated run leaves
    nothing behind."""
    global _last_work
    if _last_work is not None:
        shutil.rmtree(_last_work, ignore_errors=True)
    _last_work = LocalPath(tempfile.mkdtemp(prefix="whisper-ft-train-"))
    return _last_work


def load_data(args: dict, work: LocalPath) -> tuple[Dataset, Dataset | None]:
    """The training zips (downloaded where they are URLs), checked and decoded into `work`;
    and the general speech, if given."""
    limits = DatasetLimits(
        max_files=args["max_files"],
        max_unpacked_bytes=int(args["max_unpacked_gb"] * 1024**3),
        max_recording_seconds=args["max_recording_hours"] * 3600,
        max_total_seconds=args["max_dataset_hours"] * 3600,
    )
    zips = fetched(args, "train_data", work, limits) + fetched(
        args, "more_train_data", work, limits
    )
    validation = fetched(args, "validation_data", work, limits)
    dataset = load_dataset(
        zips,
        work / "data",
        validation_fraction=args["validation_fraction"],
        validation_zip=validation[0] if validation else None,
        skip_bad=args["skip_bad_files"],
        seed=args["seed"],
        limits=limits,
    )
    general = None
    if args["general_data"]:
        general_zip = fetched(args, "general_data", work, limits)[0]
        general = load_general(general_zip, work / "general", args)
    return dataset, general


def run_files(args: dict) -> RunFiles:
    kept = args["state_dir"] or args["resume_from"]
    return RunFiles(
        state_dir=LocalPath(kept) if kept else None,
        resume_from=LocalPath(args["resume_from"]) if args["resume_from"] else None,
    )


def dataset_summary(dataset: Dataset) -> dict:
    return {
        "recordings": dataset.recordings,
        "windows": len(dataset.train) + len(dataset.validation),
        "seconds": round(dataset.seconds, 1),
        "warnings": dataset.warnings,
    }


def wanted_processes() -> int:
    """Processes to train with: one per GPU (or $WHISPER_FT_TRAIN_PROCESSES), unless this
    process is already one of several (started by torchrun or accelerate launch)."""
    if processes().num_processes > 1:
        return 1
    if os.environ.get(PROCESSES_ENV):
        return int(os.environ[PROCESSES_ENV])
    return max(1, torch.cuda.device_count())


def launch(args: dict, count: int, work: LocalPath) -> LocalPath:
    """Run this training as `count` processes (torchrun, on this machine) through the
    command line, their logs passed on as they come; returns the archive's path. Stopping
    this call stops them (SIGTERM: with state_dir their state is kept)."""
    inputs = []
    for name, value in args.items():
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        inputs += ["-i", f"{name}={'@' if isinstance(value, LocalPath) else ''}{text}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={count}", "-m", "whisper_ft", "train", *inputs]
    logger.info("training with %d processes", count)
    error_file = work / "error.txt"
    child = subprocess.Popen(
        [*command, "-o", str(work / "out")],
        cwd=LocalPath(__file__).resolve().parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(work), progress.ERROR_FILE_ENV: str(error_file)},
    )

    def relay_log() -> None:  # through this process's stderr, which Cog's logs read
        for line in child.stderr:
            sys.stderr.write(line)

    relay = threading.Thread(target=relay_log)
    relay.start()
    try:
        printed = child.stdout.read()
        child.wait()
        relay.join()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    if child.returncode != 0:
        raise ValueError(
            error_file.read_text()
            if error_file.exists()
            else f"training with {count} processes failed (exit code {child.returncode}); "
            "its log says why"
        )
    return LocalPath(json.loads(printed)["weights"])


def fetched(args: dict, name: str, work: LocalPath, limits: DatasetLimits) -> list[LocalPath]:
    """The zips an input names (a path, a URL, or for more_train_data several, comma-
    separated), downloaded where they are URLs."""
    specs = [s.strip() for s in str(args[name] or "").split(",") if s.strip()]
    return [
        fetch_zip(spec, work / "downloads" / f"{name}-{k}.zip", name, limits.max_unpacked_bytes)
        for k, spec in enumerate(specs)
    ]


def load_general(zip_path: LocalPath, workdir: LocalPath, args: dict) -> Dataset:
    """General speech: half its recordings replayed in training, half scored for forgetting."""
    try:
        return load_dataset(
            zip_path,
            workdir,
            validation_fraction=0.5,
            skip_bad=args["skip_bad_files"],
            seed=args["seed"],
            too_small_hint="give general_data at least two recordings, or one over 30 s",
        )
    except DatasetError as e:
        raise DatasetError(f"general_data: {e}", e.problems) from e


def general_summary(general: Dataset | None, report) -> dict | None:
    if general is None:
        return None
    return {
        "replayed_windows": len(general.train),
        "scored_windows": len(general.validation),
        "wer_before": report.general_wer_before,
        "wer_after": report.general_wer_after,
    }
