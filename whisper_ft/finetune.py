"""Fine-tune Whisper with LoRA on a user's own recordings, and measure it by WER.

    model, report = finetune(hf_model("tiny.en"), dataset, TrainSettings(), LoraSettings())

Why a small loop of our own instead of `Seq2SeqTrainer`: the run must evaluate WER by
generation after every epoch, keep the best LoRA weights, report progress with an ETA to
Cog's logs, and keep a run state that resumes to the very same result. The loop reads top to
bottom in numbered phases; `accelerate` gives it device placement, mixed precision, gradient
accumulation and data-parallel processes, so the same loop runs on one CPU, one GPU or
several processes (`torchrun`, `accelerate launch`).

Labels follow Whisper's own training format: `<|startoftranscript|><|lang|><|task|>`, then
either `<|notimestamps|>` and the text, or the text of each cue between its start and end
timestamp tokens, so the fine-tuned model still times segments for subtitles. A prompt
(`<|startofprev|>` and the run's vocabulary) may come first (`prompt_fraction`); it is read,
not learned.

The default recipe (chosen by bench/finetune.py, see BENCHMARKS.md) puts what is taught into
the merged weights, which then spell it with no prompt: each cue is an example of its own
(many short examples, not a few 30 s windows), LoRA on the encoder and the decoder (the
spelling of a new word is the decoder's), speed perturbation so the words are learned across
voices, half the examples with timestamp tokens.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from whisper_ft import progress
from whisper_ft.dataset import Dataset, Example, samples, sentences
from whisper_ft.vocabulary import absent_from, as_hotwords, find_vocabulary
from whisper_ft.wer import word_error_rate

logger = logging.getLogger(__name__)

TIME_PRECISION = 0.02  # seconds per Whisper timestamp token
MAX_LABEL_TOKENS = 448  # Whisper decoder's context
WINDOW_SAMPLES = 30 * 16000  # Whisper's input: 30 s at 16 kHz


# Which layers LoRA adapts. "all" (the default): a new word's spelling is the decoder's, so the
# decoder is adapted with the encoder. "acoustic": the encoder and the decoder's
# cross-attention only, leaving the decoder's language model as it was (BENCHMARKS.md).
LORA_LAYERS = ("acoustic", "all", "decoder", "encoder")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 32  # LoRA rank r
    alpha: int = 64  # scaling numerator: updates are scaled by alpha / rank
    dropout: float = 0.05  # dropout on the LoRA input
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # attention projections adapted
    layers: str = "all"  # which layers: see LORA_LAYERS

    def validate(self) -> LoraSettings:
        if not 1 <= self.rank <= 256:
            raise ValueError(f"lora_rank: {self.rank} is outside 1..256")
        if not 1 <= self.alpha <= 1024:
            raise ValueError(f"lora_alpha: {self.alpha} is outside 1..1024")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora_dropout: {self.dropout} is outside 0..1")
        if self.layers not in LORA_LAYERS:
            raise ValueError(f"lora_layers: {self.layers!r} is not one of {', '.join(LORA_LAYERS)}")
        allowed = {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
        unknown = [m for m in self.target_modules if m not in allowed]
        if unknown or not self.target_modules:
            raise ValueError(
                f"target_modules: {', '.join(unknown) or 'none given'}; "
                f"choose from {', '.join(sorted(allowed))}"
            )
        return self

    def peft_targets(self) -> list[str] | str:
        """peft's target_modules: names, or a regex limiting them to some of the layers."""
        if self.layers == "all":
            return list(self.target_modules)
        names = "|".join(self.target_modules)
        if self.layers == "acoustic":  # the encoder, and the decoder's cross-attention
            stacks = r"encoder\.layers\.\d+\.(.*\.)?|decoder\.layers\.\d+\.encoder_attn\."
            return rf".*model\.({stacks})({names})"
        return rf".*model\.{self.layers}\.layers\.\d+\.(.*\.)?({names})"


@dataclass(frozen=True)
class TrainSettings:
    language: str | None = None  # language code of the speech; None: detect it on the data
    task: str = "transcribe"  # or translate (speech in any language, English labels)
    num_train_epochs: float = 5.0  # passes over the training windows
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    learning_rate: float = 5e-4  # peak LoRA learning rate (linear warm-up, linear decay)
    warmup_fraction: float = 0.1  # share of the steps spent warming up
    batch_size: int = 8  # examples per forward pass
    gradient_accumulation: int = 1  # forward passes per optimizer step
    timestamp_fraction: float = 0.5  # share of examples trained with timestamp tokens
    # Train on each cue as a short example of its own (True), or on windows of up to 30 s
    # holding several cues: many short examples put new words into the weights.
    sentences: bool = True
    prompt_fraction: float = 0.0  # share of examples trained reading the vocabulary prompt
    # Share of prompted windows whose prompt leaves out the words they contain: the model
    # learns that a word in the prompt is not proof that it was said.
    absent_prompt_fraction: float = 0.5
    speed_perturbation: float = 0.15  # play windows at 1 -/+ this speed, a third of the time each
    vocabulary: tuple[str, ...] = ()  # words to serve as hotwords, besides those found
    learn_vocabulary: bool = True  # find the words the base model missed in the transcripts
    distill_weight: float = 0.0  # weight of the pull toward the base model (self-distillation)
    known_labels: bool = True  # train on label tokens the base model already gets right too
    eval_batch_size: int = 8
    seed: int = 0

    def validate(self) -> TrainSettings:
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task: {self.task!r} is not transcribe or translate")
        if not 0 < self.num_train_epochs <= 100:
            raise ValueError(f"num_train_epochs: {self.num_train_epochs} is outside (0, 100]")
        if self.max_steps is not None and not 1 <= self.max_steps <= 100_000:
            raise ValueError(f"max_steps: {self.max_steps} is outside 1..100000")
        if not 0 < self.learning_rate <= 0.1:
            raise ValueError(f"learning_rate: {self.learning_rate} is outside (0, 0.1]")
        if not 1 <= self.batch_size <= 256:
            raise ValueError(f"batch_size: {self.batch_size} is outside 1..256")
        if not 1 <= self.gradient_accumulation <= 256:
            raise ValueError(
                f"gradient_accumulation: {self.gradient_accumulation} is outside 1..256"
            )
        if not 0.0 <= self.distill_weight <= 10.0:
            raise ValueError(f"distill_weight: {self.distill_weight} is outside 0..10")
        if not 0.0 <= self.speed_perturbation <= 0.3:
            raise ValueError(f"speed_perturbation: {self.speed_perturbation} is outside 0..0.3")
        if not 0.0 <= self.prompt_fraction <= 1.0:
            raise ValueError(f"prompt_fraction: {self.prompt_fraction} is outside 0..1")
        if not 0.0 <= self.absent_prompt_fraction <= 1.0:
            raise ValueError(
                f"absent_prompt_fraction: {self.absent_prompt_fraction} is outside 0..1"
            )
        if not 0.0 <= self.timestamp_fraction <= 1.0:
            raise ValueError(f"timestamp_fraction: {self.timestamp_fraction} is outside 0..1")
        return self


@dataclass
class TrainReport:
    language: str
    train_windows: int
    validation_windows: int
    steps: int = 0
    seconds: float = 0.0
    wer_before: float | None = None  # validation WER of the base model, in percent
    wer_after: float | None = None  # validation WER of the merged (best) model
    general_wer_before: float | None = None  # WER on held-out general speech, if given
    general_wer_after: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)  # per epoch: loss, WER
    vocabulary: list[str] = field(default_factory=list)  # served as hotwords


# ---------------------------------------------------------------- labels and the collator


class Labeller:
    """Turns an Example into Whisper decoder labels, with or without timestamp tokens."""

    def __init__(self, tokenizer, language: str | None, task: str, multilingual: bool):
        self.tokenizer = tokenizer
        self.prefix_plain = self._prefix(language, task, multilingual, timestamps=False)
        self.prefix_timed = self._prefix(language, task, multilingual, timestamps=True)
        self.eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.sot_prev = tokenizer.convert_tokens_to_ids("<|startofprev|>")
        self.timestamp_begin = tokenizer.convert_tokens_to_ids("<|0.00|>")

    def _prefix(self, language, task, multilingual, timestamps) -> list[int]:
        tokens = ["<|startoftranscript|>"]
        if multilingual:
            tokens += [f"<|{language}|>", f"<|{task}|>"]
        if not timestamps:
            tokens.append("<|notimestamps|>")
        return self.tokenizer.convert_tokens_to_ids(tokens)

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(" " + text.strip(), add_special_tokens=False)

    def prompt_ids(self, text: str | None) -> list[int]:
        """`<|startofprev|>` and the prompt text, as Whisper reads hotwords; [] for none."""
        return [self.sot_prev, *self.text_ids(text)] if text else []

    def labels(self, example: Example, timestamps: bool, prompt: Sequence[int] = ()) -> list[int]:
        """The decoder sequence: the prompt (if any, and if it fits), the prefix, the text."""
        if timestamps and example.cues:
            ids = list(self.prefix_timed)
            for cue in example.cues:
                ids.append(self._time(cue.start))
                ids += self.text_ids(" ".join(cue.text.split()))
                ids.append(self._time(cue.end))
        else:
            ids = self.prefix_plain + self.text_ids(example.text)
        ids.append(self.eot)
        if prompt and len(prompt) + len(ids) <= MAX_LABEL_TOKENS:
            ids = [*prompt, *ids]
        if len(ids) > MAX_LABEL_TOKENS:
            raise ValueError(
                f"{example.recording} at {example.start:.1f} s: the transcript of this 30 s "
                f"window is {len(ids)} tokens, more than Whisper's {MAX_LABEL_TOKENS}"
            )
        return ids

    def _time(self, seconds: float) -> int:
        return self.timestamp_begin + min(1500, max(0, round(seconds / TIME_PRECISION)))


class Collator:
    """Batches features and labels for WhisperForConditionalGeneration.

    Labels are padded and then masked to -100 *by the attention mask*, not by value: Whisper's
    pad token is also its end-of-text token, so masking by value would hide the very token
    that teaches the model to stop. The model prepends `decoder_start_token_id` itself when
    it shifts labels right, so a leading start token is stripped here. A sequence that starts
    with a prompt (`<|startofprev|>` ...) gets explicit decoder inputs instead, and only the
    tokens after its start token are targets: the prompt is read, not learned.
    """

    def __init__(self, feature_extractor, pad_token_id: int, decoder_start_token_id: int):
        self.feature_extractor = feature_extractor
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id

    def __call__(self, audios: Sequence[np.ndarray], labels: Sequence[list[int]]) -> dict:
        features = self.feature_extractor(
            [samples(a) for a in audios], sampling_rate=16000, return_tensors="pt"
        ).input_features
        if any(ids[0] != self.decoder_start_token_id for ids in labels):
            return {"input_features": features, **self._prompted(labels)}
        labels = [ids[1:] for ids in labels]
        width = max(len(ids) for ids in labels)
        padded = torch.full((len(labels), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(labels), width), dtype=torch.long)
        for row, ids in enumerate(labels):
            padded[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        return {"input_features": features, "labels": padded.masked_fill(mask == 0, -100)}

    def _prompted(self, sequences: Sequence[list[int]]) -> dict:
        width = max(len(ids) for ids in sequences) - 1
        inputs = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(sequences), width), -100, dtype=torch.long)
        for row, ids in enumerate(sequences):
            start = ids.index(self.decoder_start_token_id)
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])
            labels[row, start : len(ids) - 1] = torch.tensor(ids[start + 1 :])
        return {"decoder_input_ids": inputs, "labels": labels}


# ---------------------------------------------------------------- evaluation


def training_prompt(
    example: Example, vocabulary: Sequence[str], labeller: Labeller, settings, rng
) -> list[int]:
    """The prompt a training window reads: none (1 - prompt_fraction of the time), the
    served vocabulary, or (absent_prompt_fraction of the prompted windows) the vocabulary
    without the words this window says: a negative example, so that the model does not
    write a prompt word it did not hear."""
    if rng.random() >= settings.prompt_fraction:
        return []
    if settings.absent_prompt_fraction and rng.random() < settings.absent_prompt_fraction:
        return labeller.prompt_ids(as_hotwords(absent_from(vocabulary, example.text)))
    return labeller.prompt_ids(as_hotwords(vocabulary))


def is_multilingual(model) -> bool:
    """openai/whisper's rule: English-only models have 51864 tokens, multilingual ones more."""
    return model.config.vocab_size >= 51865


@torch.no_grad()
def transcribe_examples(
    model, processor, audios, language, task, batch_size=8, prompt: str | None = None
) -> list[str]:
    """Greedy transcripts of short clips through the transformers generate path, with
    `prompt` (hotwords) before each, as the served model reads its vocabulary."""
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    texts: list[str] = []
    kwargs = {"task": task, "language": language} if is_multilingual(model) else {}
    if prompt:
        ids = processor.get_prompt_ids(" " + prompt.strip(), return_tensors="pt")
        kwargs["prompt_ids"] = ids.to(device)
    for i in range(0, len(audios), batch_size):
        features = processor.feature_extractor(
            [samples(a) for a in audios[i : i + batch_size]],
            sampling_rate=16000,
            return_tensors="pt",
        ).input_features.to(device, dtype)
        ids = model.generate(features, num_beams=1, do_sample=False, **kwargs)
        texts += processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [t.strip() for t in texts]


def evaluate(
    model, processor, examples: Sequence[Example], language, task, batch_size, prompt=None
) -> float:
    hypotheses = transcribe_examples(
        model, processor, [e.audio for e in examples], language, task, batch_size, prompt
    )
    return word_error_rate([e.text for e in examples], hypotheses, language)


# ---------------------------------------------------------------- the training loop


def corrections_loss(
    model, inputs: dict, logits: torch.Tensor, known_weight: float, known_labels: bool
) -> torch.Tensor:
    """Cross-entropy on the label tokens the base model gets wrong (the user's corrections),
    and on the tokens it already gets right a KL divergence toward the base model's own
    distribution (the adapter switched off) with weight `known_weight`; with `known_labels`
    those tokens also keep their cross-entropy. Both are averaged over all label tokens."""
    labels = inputs["labels"]
    with torch.no_grad(), model.disable_adapter():
        teacher = model(**inputs).logits.float()
    valid = labels != -100
    known = valid & (teacher.argmax(-1) == labels)
    logits = logits.float()
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )
    trained = valid if known_labels else valid & ~known
    total = valid.sum().clamp(min=1)
    loss = ce[trained].sum() / total
    if known.any() and known_weight > 0:
        teacher_log = torch.log_softmax(teacher[known], dim=-1)
        student_log = torch.log_softmax(logits[known], dim=-1)
        kl = torch.sum(teacher_log.exp() * (teacher_log - student_log), dim=-1)
        loss = loss + known_weight * kl.sum() / total
    return loss


def learn_vocabulary(model, processor, windows, language, settings) -> list[str]:
    """The user's `vocabulary`, then the words of the training transcripts that the base
    model missed (whisper_ft/vocabulary.py)."""
    references, heard = [], []
    if settings.learn_vocabulary:
        references = [e.text for e in windows]
        heard = transcribe_examples(
            model, processor, [e.audio for e in windows], language, settings.task
        )
    words = find_vocabulary(references, heard, processor.tokenizer, settings.vocabulary)
    logger.info("vocabulary (served as hotwords): %s", ", ".join(words) or "none")
    return words


def perturb_speed(example: Example, amount: float, rng: random.Random) -> Example:
    """Kaldi-style speed perturbation: the window played at 1 - amount, 1 or 1 + amount times
    its speed (tempo and pitch together), its cue times scaled to match. A window that would
    grow past 30 s keeps its speed."""
    factor = rng.choice((1.0 - amount, 1.0, 1.0 + amount))
    length = round(example.audio.size / factor)
    if amount == 0 or factor == 1.0 or length > WINDOW_SAMPLES:
        return example
    audio = np.interp(
        np.arange(length) * factor, np.arange(example.audio.size), samples(example.audio)
    ).astype(np.float32)
    cues = tuple(
        dataclasses.replace(c, start=c.start / factor, end=c.end / factor) for c in example.cues
    )
    return dataclasses.replace(example, audio=audio, cues=cues)


def epoch_score(entry: dict, report: TrainReport) -> float:
    """Lower is better: validation WER, plus the rise in general-speech WER when that is
    measured; without validation, the later epoch."""
    if "wer" not in entry and "general_wer" not in entry:
        return -entry["epoch"]
    rise = entry.get("general_wer", 0.0) - (report.general_wer_before or 0.0)
    return entry.get("wer", 0.0) + rise


def warn_if_worse(report: TrainReport) -> None:
    """Log the before/after WERs of the kept epoch, with a warning for any that got worse."""
    pairs = (
        ("validation", report.wer_before, report.wer_after),
        ("general speech", report.general_wer_before, report.general_wer_after),
    )
    for name, before, after in pairs:
        if before is None or after is None:
            continue
        if after > before:
            logger.warning(
                "%s WER got WORSE: %.2f%% -> %.2f%% (epoch %d kept). The model may have "
                "forgotten some general speech: try a lower learning_rate or fewer epochs, "
                "add more (or more varied) training audio%s",
                name,
                before,
                after,
                report.best_epoch,
                "" if report.general_wer_before is not None else ", or pass general_data",
            )
        else:
            logger.info(
                "%s WER %.2f%% -> %.2f%% (epoch %d kept)", name, before, after, report.best_epoch
            )


def processes():
    """accelerate's view of the processes of this run: one, or those `accelerate launch` or
    `torchrun` started. Without a GPU they train on CPU and talk through gloo."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def mixed_precision() -> str:
    """accelerate's mixed precision: bf16 (or fp16) where there is a GPU, none on CPU."""
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def detect_language(model, processor, examples: Sequence[Example]) -> str:
    """Majority language of up to eight training windows, by the base model."""
    if not is_multilingual(model):
        return "en"
    sample = list(examples[:8])
    features = processor.feature_extractor(
        [samples(e.audio) for e in sample], sampling_rate=16000, return_tensors="pt"
    ).input_features.to(next(model.parameters()).device, next(model.parameters()).dtype)
    with torch.no_grad():
        ids = model.detect_language(features).tolist()
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    votes = max(set(tokens), key=tokens.count)
    language = votes.strip("<|>")
    logger.info("detected language %r on the training audio (%s)", language, tokens)
    return language


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its state (`state_dir`: after every epoch and on cancel) and the
    state it continues (`resume_from`), whisper_ft/runstate.py."""

    state_dir: Path | None = None
    resume_from: Path | None = None


def finetune(
    base_dir: Path,
    dataset: Dataset,
    settings: TrainSettings,
    lora: LoraSettings,
    general: Dataset | None = None,
    on_epoch: Callable[[object, dict, TrainReport], None] | None = None,
    run_files: RunFiles = RunFiles(),
):
    """Train LoRA on `dataset`, keep the epoch with the best validation WER, return the
    model with its adapter, its processor and a TrainReport.

    `general`, when given, is general speech in the same language: its train windows are
    replayed among the user's (at most as many per epoch as the user has windows), and its
    validation windows measure forgetting (WER before and after, `general_wer_*`).
    `on_epoch(model, entry, report)` is called after each epoch's evaluation (benchmarks use it).

    The run is an accelerate run: started by `accelerate launch` or `torchrun` with several
    processes (CPU or GPUs), each process trains on its own share of every epoch's batches and
    the gradients are averaged; only the main process scores, logs and keeps the best epoch
    (the others return a model that is not to be exported)."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, gather_object
    from peft import (
        LoraConfig,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from whisper_ft import runstate

    # 1. The processes, the random state, the base model and its language.
    settings, lora = settings.validate(), lora.validate()
    accelerator = Accelerator(
        cpu=processes().device.type == "cpu",
        mixed_precision=mixed_precision(),
        gradient_accumulation_steps=settings.gradient_accumulation,
    )
    main, rank = accelerator.is_main_process, accelerator.process_index
    torch.manual_seed(settings.seed)
    # The main process's generator draws every epoch's order (sent to the others) and its
    # own augmentation; each other process draws its augmentation from its own.
    rng = random.Random(settings.seed + rank)
    processor = WhisperProcessor.from_pretrained(base_dir)
    model = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    model.to(accelerator.device)
    multilingual = is_multilingual(model)
    language = settings.language or detect_language(model, processor, dataset.train)
    if not multilingual and (language != "en" or settings.task != "transcribe"):
        raise ValueError(
            f"the base model is English-only; it cannot learn language {language!r} "
            f"with task {settings.task!r}: use a multilingual base model such as `base`"
        )
    report = TrainReport(language, len(dataset.train), len(dataset.validation))
    evaluating = bool(dataset.validation)
    general_scored = general is not None and bool(general.validation)
    replay = list(general.train) if general is not None else []
    emit = progress.emit if main else (lambda *args, **fields: None)

    def score(examples: Sequence[Example]) -> float:
        return evaluate(
            accelerator.unwrap_model(model),
            processor,
            examples,
            language,
            settings.task,
            settings.eval_batch_size,
        )

    # 2. The examples: each cue as a short example of its own (sentences), or whole windows
    # of up to 30 s; the user's first, then the general speech replayed.
    labeller = Labeller(processor.tokenizer, language, settings.task, multilingual)
    collator = Collator(
        processor.feature_extractor,
        pad_token_id=model.config.pad_token_id,
        decoder_start_token_id=model.config.decoder_start_token_id,
    )
    shape = sentences if settings.sentences else (lambda e: [e])
    windows = [s for e in dataset.train for s in shape(e)]
    own = len(windows)  # windows[:own] are the user's, the rest general speech
    windows += [s for e in replay for s in shape(e)]
    for e in windows:  # a transcript too long for the decoder fails here, before training
        labeller.labels(e, timestamps=True)
    replayed = min(len(windows) - own, own)  # general examples mixed into each epoch
    identity = {  # what a resumed run must share with the run it continues
        "base_model": str(base_dir),
        "examples": [own, len(windows) - own],
        "audio_samples": sum(e.audio.size for e in windows),
        "train": dataclasses.asdict(settings),
        "lora": dataclasses.asdict(lora),
        "processes": accelerator.num_processes,
    }
    identity = json.loads(json.dumps(identity))  # as it reads back from state.json
    saved = (
        runstate.load_run(run_files.resume_from, identity, rank)
        if run_files.resume_from is not None
        else None
    )

    # 3. Before training (the main process): WERs, and the words the base model missed.
    position = saved.position if saved else runstate.Position()
    if saved is None and main:
        if evaluating:
            position.before["wer"] = score(dataset.validation)
            logger.info("validation WER before training: %.2f%%", position.before["wer"])
        if general_scored:
            position.before["general_wer"] = score(general.validation)
            logger.info(
                "general speech WER before training: %.2f%%", position.before["general_wer"]
            )
        position.before["vocabulary"] = learn_vocabulary(
            model, processor, dataset.train, language, settings
        )
    (position.before,) = broadcast_object_list([position.before])
    report.wer_before = position.before.get("wer")
    report.general_wer_before = position.before.get("general_wer")
    report.vocabulary = position.before.get("vocabulary", [])

    # 4. LoRA, the optimizer and the schedule (linear warm-up, linear decay).
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.peft_targets(),
            bias="none",
        ),
    )
    if accelerator.device.type == "cuda":
        model.base_model.model.gradient_checkpointing_enable()
        model.base_model.model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("LoRA: %d trainable parameters (r=%d, alpha=%d)", trainable, lora.rank, lora.alpha)
    batches = math.ceil((own + replayed) / settings.batch_size)
    per_epoch = math.ceil(
        math.ceil(batches / accelerator.num_processes) / settings.gradient_accumulation
    )
    total_steps = settings.max_steps or max(1, round(per_epoch * settings.num_train_epochs))
    epochs = math.ceil(total_steps / per_epoch)
    warmup = max(1, int(total_steps * settings.warmup_fraction))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / (total_steps - warmup + 1))),
    )
    if saved is not None:
        set_peft_model_state_dict(model, saved.adapter)
        optimizer.load_state_dict(saved.optimizer)
        scheduler.load_state_dict(saved.scheduler)
        rng.setstate(saved.python_rng)
        logger.info(
            "resuming %s at epoch %d, step %d/%d",
            run_files.resume_from,
            position.epoch,
            position.step,
            total_steps,
        )
    model, optimizer = accelerator.prepare(model, optimizer)
    best_state = saved.best if saved else None
    logger.info(
        "training %d examples (+%d of general speech), %d steps (%d epochs, batch %d x %d x %d "
        "processes) on %s",
        own,
        replayed,
        total_steps,
        epochs,
        settings.batch_size,
        settings.gradient_accumulation,
        accelerator.num_processes,
        accelerator.device.type,
    )

    def batch_of(indices: list[int]) -> dict:
        """A batch as trained: each window at a random speed, with or without timestamps."""
        chosen = [perturb_speed(windows[i], settings.speed_perturbation, rng) for i in indices]
        labels = [
            labeller.labels(
                e,
                bool(e.cues) and rng.random() < settings.timestamp_fraction,
                training_prompt(e, report.vocabulary, labeller, settings, rng),
            )
            for e in chosen
        ]
        return {**collator([e.audio for e in chosen], labels), "windows": torch.tensor(indices)}

    def save_state(epoch_rng: tuple) -> None:
        """This process's random state, then (the main process) the rest of the run state."""
        if run_files.state_dir is None:
            return
        runstate.save_process(run_files.state_dir, rank, epoch_rng, torch_rng)
        if main:
            runstate.save_run(
                run_files.state_dir,
                position,
                identity,
                get_peft_model_state_dict(accelerator.unwrap_model(model)),
                best_state,
                optimizer.state_dict(),
                scheduler.state_dict(),
            )

    # 5. The loop: the epochs' batches shared among the processes, the best epoch kept.
    start, first_step = time.monotonic(), position.step
    restore = saved.torch_rng if saved else None  # dropout's state where the run stopped
    torch_rng = restore if saved else runstate.torch_random_state()  # after the last step
    while position.epoch <= epochs and position.step < total_steps:
        epoch = position.epoch
        model.train()
        epoch_rng = rng.getstate()
        order = None
        if main:
            order = list(range(own)) + rng.sample(range(own, len(windows)), replayed)
            rng.shuffle(order)
        (order,) = broadcast_object_list([order])
        loader = accelerator.prepare_data_loader(
            torch.utils.data.DataLoader(
                order,
                batch_size=settings.batch_size,
                collate_fn=batch_of,
                generator=torch.Generator(),
            )
        )
        skip = position.steps_in_epoch * settings.gradient_accumulation  # done before resuming
        seen: list[int] = []
        losses_kept = len(position.losses)
        try:
            for index, inputs in enumerate(loader):
                if index < skip:  # drawn again, as the interrupted run drew it, not trained
                    continue
                if restore is not None:
                    runstate.set_torch_random_state(restore)
                    restore = None
                seen += inputs.pop("windows").tolist()
                with accelerator.accumulate(model):
                    output = model(**inputs)
                    loss = output.loss
                    if settings.distill_weight > 0 or not settings.known_labels:
                        loss = corrections_loss(
                            accelerator.unwrap_model(model),
                            inputs,
                            output.logits,
                            settings.distill_weight,
                            settings.known_labels,
                        )
                    accelerator.backward(loss)
                    position.losses.append(loss.item())
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                position.step += 1
                position.steps_in_epoch += 1
                torch_rng, losses_kept = runstate.torch_random_state(), len(position.losses)
                elapsed = time.monotonic() - start
                per_step = elapsed / (position.step - first_step)
                eta = per_step * (total_steps - position.step)
                logger.info(
                    "step %d/%d  epoch %d  loss %.4f  lr %.2e  %.1f s/step  ETA %.0f s",
                    position.step,
                    total_steps,
                    epoch,
                    position.losses[-1],
                    scheduler.get_last_lr()[0],
                    per_step,
                    eta,
                )
                emit(
                    "step",
                    step=position.step,
                    steps=total_steps,
                    epoch=epoch,
                    loss=round(position.losses[-1], 4),
                    eta=round(eta, 1),
                )
                if position.step >= total_steps:
                    break
        except BaseException:
            # Canceled or interrupted: keep the run as it stood after its last whole step.
            del position.losses[losses_kept:]
            save_state(epoch_rng)
            raise
        entry = {"epoch": epoch, "step": position.step, "loss": float(np.mean(position.losses))}
        if accelerator.num_processes > 1:
            entry["processes"] = shares(gather_object([seen]))
        if main:
            if evaluating:
                entry["wer"] = score(dataset.validation)  # as served: the weights alone
            if general_scored:
                entry["general_wer"] = score(general.validation)
            logger.info(
                "epoch %d: loss %.4f%s%s",
                epoch,
                entry["loss"],
                f", validation WER {entry['wer']:.2f}%" if "wer" in entry else "",
                f", general speech WER {entry['general_wer']:.2f}%" if general_scored else "",
            )
            position.history.append(entry)
            emit("epoch", **entry)
            if on_epoch is not None:
                on_epoch(accelerator.unwrap_model(model), entry, report)
            if position.best_score is None or epoch_score(entry, report) <= position.best_score:
                position.best_score, position.best_epoch = epoch_score(entry, report), epoch
                best_state = copy.deepcopy(
                    get_peft_model_state_dict(accelerator.unwrap_model(model))
                )
        position.epoch, position.steps_in_epoch, position.losses = epoch + 1, 0, []
        save_state(rng.getstate())
        accelerator.wait_for_everyone()

    # 6. The best epoch's weights (the main process).
    model = accelerator.unwrap_model(model)
    report.steps, report.seconds = position.step, time.monotonic() - start
    report.history, report.best_epoch = position.history, position.best_epoch
    if main:
        set_peft_model_state_dict(model, best_state)
        best = report.history[report.best_epoch - 1]
        report.wer_after, report.general_wer_after = best.get("wer"), best.get("general_wer")
        warn_if_worse(report)
        emit(
            "kept",
            epoch=report.best_epoch,
            wer_before=report.wer_before,
            wer_after=report.wer_after,
        )
    return model, processor, report


def shares(seen_by_process: list[list[int]]) -> dict:
    """How an epoch's examples were shared among the processes: how many each trained on,
    and how many more than one trained on (only to fill the last round of batches)."""
    counts = [len(set(seen)) for seen in seen_by_process]
    union = set().union(*map(set, seen_by_process))
    return {"examples": counts, "on_several": sum(counts) - len(union)}
