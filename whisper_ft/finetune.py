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
(`<|startofprev|>` and words) may come first, read and not learned: the recipe reads none,
bench/research.py's prompted recipes do (`Hooks`).

The default recipe (chosen by bench/finetune.py, see BENCHMARKS.md) puts what is taught into
the merged weights, which then spell it with no prompt: each cue is an example of its own
(many short examples, not a few 30 s windows), LoRA on the encoder and the decoder (the
spelling of a new word is the decoder's), speed perturbation so the words are learned across
voices, half the examples with timestamp tokens, and a pull toward the base model's own
predictions on every token but the taught words' (`hold_weight`). Five of its inputs follow
the data (`fit_recipe`): where the run teaches new words (its vocabulary, found before
training, is not empty), every projection is adapted at lr 1e-3 with a penalty on how much
each adapted layer's output moves on the inputs the base model sees in the training speech
outside those words (`change_weight`), and a model of four encoder layers (tiny) leaves the
lower half of its encoder as it was and keeps 0.9 of the upper half's trained change; where
it teaches none, the q and v projections alone at 5e-4, which leave general speech as it
was. Each alone fails the other kind of data (README, BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import random
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from whisper_ft import progress
from whisper_ft.audio import HOP_LENGTH, MULTILINGUAL_VOCAB, N_SAMPLES, SAMPLE_RATE, TIME_PRECISION
from whisper_ft.dataset import Dataset, Example, samples, sentences
from whisper_ft.inputs import check_settings, setting
from whisper_ft.transcribe import TASKS
from whisper_ft.vocabulary import find_vocabulary
from whisper_ft.wer import reference_words, word_error_rate

logger = logging.getLogger(__name__)

MAX_LABEL_TOKENS = 448  # Whisper decoder's context


# Which layers LoRA adapts. "all": a new word's spelling is the decoder's, so the decoder is
# adapted with the encoder. "acoustic": the encoder and the decoder's cross-attention only,
# leaving the decoder's language model as it was (BENCHMARKS.md). "upper": the decoder and
# the upper half of the encoder, whose lower half stays the base model's: training's backward
# pass stops halfway down the encoder. Left empty, fit_recipe chooses (`for_size`).
LORA_LAYERS = ("acoustic", "all", "decoder", "encoder", "upper")
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class LoraSettings:
    """The adapter. Each field is also a training input (`lora_` + its name, or its name)."""

    rank: int = setting(32, ge=1, le=256)  # LoRA rank r
    alpha: int = setting(64, ge=1, le=1024)  # updates are scaled by alpha / rank
    dropout: float = setting(0.05, ge=0.0, le=0.9)  # dropout on the LoRA input
    target_modules: tuple[str, ...] = setting(())  # of LORA_MODULES; (): fit_recipe's
    layers: str | None = setting(None, choices=list(LORA_LAYERS))  # see LORA_LAYERS; None: chosen
    # The encoder's learned change is kept at this fraction of itself once trained (1: as
    # trained), its adapted weights set between the base model's and the trained ones. The
    # encoder learns to hear the training voices, which general speech pays for, the decoder
    # the spellings: lower keeps general speech better and spells less (BENCHMARKS.md).
    # None: chosen with the layers (`for_size`).
    encoder_scale: float | None = setting(None, ge=0.0, le=1.0)

    def validate(self) -> LoraSettings:
        check_settings(self)
        unknown = [m for m in self.target_modules if m not in LORA_MODULES]
        if unknown:
            raise ValueError(
                f"target_modules: {', '.join(unknown)}; "
                f"choose from {', '.join(sorted(LORA_MODULES))}"
            )
        return self

    def peft_targets(self, encoder_layers: int = 0) -> list[str] | str:
        """peft's target_modules: names, or a regex limiting them to some of the layers (of
        a model with `encoder_layers`, for "upper"). The layers must be chosen (fit_recipe)."""
        if self.layers is None:
            raise ValueError("layers is empty: fit_recipe chooses it for the run's data")
        if self.layers == "all":
            return list(self.target_modules)
        names = "|".join(self.target_modules)
        if self.layers == "upper":
            if encoder_layers < 2:
                raise ValueError("layers='upper' needs the model's number of encoder layers")
            upper = "|".join(str(i) for i in range(encoder_layers // 2, encoder_layers))
            stacks = rf"encoder\.layers\.({upper})\.|decoder\.layers\.\d+\."
            return rf".*model\.({stacks})(.*\.)?({names})"
        if self.layers == "acoustic":  # the encoder, and the decoder's cross-attention
            stacks = r"encoder\.layers\.\d+\.(.*\.)?|decoder\.layers\.\d+\.encoder_attn\."
            return rf".*model\.({stacks})({names})"
        return rf".*model\.{self.layers}\.layers\.\d+\.(.*\.)?({names})"


@dataclass(frozen=True)
class TrainSettings:
    """The recipe (chosen by bench/finetune.py, BENCHMARKS.md). The fields declared with
    `setting` are also training inputs of the same name (train.py)."""

    language: str | None = None  # language code of the speech; None: detect it on the data
    task: str = setting("transcribe", choices=list(TASKS))  # translate: English labels
    num_train_epochs: float = setting(5.0, ge=0.1, le=100.0)  # passes over the examples
    max_steps: int = setting(0, ge=0, le=100000)  # optimizer steps; 0: use num_train_epochs
    # Peak (linear warm-up and decay); None: fit_recipe's.
    learning_rate: float | None = setting(None, ge=1e-6, le=0.1)
    batch_size: int = setting(8, ge=1, le=256)  # examples per forward pass
    gradient_accumulation: int = setting(1, ge=1, le=256)  # forward passes per optimizer step
    timestamp_fraction: float = setting(0.5, ge=0.0, le=1.0)  # examples with timestamp tokens
    # Train on each cue as a short example of its own (True), or on windows of up to 30 s
    # holding several cues: many short examples put new words into the weights.
    sentences: bool = setting(True)
    # With sentences: each window of several cues is also trained whole, so that long
    # audio is trained (and held by the pull) as well as short. Off: with tiny.en it read
    # real speech far worse on one seed of two, a little better on the other (BENCHMARKS.md).
    whole_windows: bool = False
    # Each example's audio before its first cue cut to a random length, from none to all the
    # window holds, so that speech starting at the very start of the audio is trained too.
    # Off: the first words real speech loses were lost as before (BENCHMARKS.md).
    random_onset: bool = False
    speed_perturbation: float = setting(0.15, ge=0.0, le=0.3)  # 1 -/+ this speed, a third each
    vocabulary: tuple[str, ...] = setting(())  # words the run teaches, besides those found
    learn_vocabulary: bool = setting(True)  # find the words the base model missed
    # Weight of a pull toward the base model's own predictions (a KL divergence, the adapter
    # switched off) on every label token but the vocabulary's, all of general_data's
    # included: the new words are learned, what the base model already reads is held (0: off).
    hold_weight: float = setting(1.0, ge=0.0, le=100.0)
    # The pull's temperature: both models' predictions softened by it before the divergence
    # (times its square, so the pull's size stays that of hold_weight), which weighs the
    # base model's second choices as well as its first (Hinton et al., 2015). At 2 the
    # tuned tiny.en read real speech worse and spelled less (BENCHMARKS.md): 1 is kept.
    hold_temperature: float = 1.0
    # Weight of a penalty on how much each adapted layer's output moves on the speech it is
    # held to: the training examples (all but where the decoder writes the vocabulary's
    # words) and general_data, measured on the base model before training. What is taught
    # goes into the directions the rest of that speech does not use (0: off; None:
    # fit_recipe's).
    change_weight: float | None = setting(None, ge=0.0, le=100000.0)
    seed: int = setting(0, ge=0, le=2147483647)
    warmup_fraction: float = 0.1  # share of the steps spent warming up
    eval_batch_size: int = 8

    def validate(self) -> TrainSettings:
        check_settings(self)
        if self.hold_temperature <= 0:
            raise ValueError(f"hold_temperature must be above 0, not {self.hold_temperature}")
        return self


# The inputs of the recipe that follow the data, where the run leaves them empty: teaching
# new words takes every projection at a higher rate, the change held off the rest of the
# training speech; on data with no new words that reads general speech worse, and the q and
# v projections alone at 5e-4 leave it as it was (BENCHMARKS.md, "The recipe follows the
# data").
RECIPES = {
    "new words": {"target_modules": LORA_MODULES, "learning_rate": 1e-3, "change_weight": 1000.0},
    "no new words": {
        "target_modules": ("q_proj", "v_proj"),
        "learning_rate": 5e-4,
        "change_weight": 0.0,
    },
}


def recipe_for(vocabulary: Sequence[str]) -> str:
    """The RECIPES entry for a run's data: "new words" where its vocabulary is not empty."""
    return "new words" if vocabulary else "no new words"


# A model of at most this many encoder layers (tiny, tiny.en) taught new words adapts the upper
# half of its encoder and all of its decoder: tiny.en then spelled and read real speech as
# with every layer adapted, in 0.75x the training time. base read real speech 1.17 points
# worse that way, so larger models adapt every layer (BENCHMARKS.md). Such a small model keeps
# 0.9 of its encoder's trained change: on three training seeds tiny.en spelled as many of the
# held-out names (95.8%) and read real speech -0.08 to +0.39 points from the base model's,
# against +0.16 to +0.93 as trained (BENCHMARKS.md, "Nine tenths of the encoder's change").
UPPER_ONLY_UP_TO = 4


def for_size(recipe: str, encoder_layers: int) -> dict:
    """The layers LoRA adapts (LORA_LAYERS) and the share of the encoder's change kept,
    where the run leaves them empty: they follow the model's size."""
    if recipe == "new words" and encoder_layers <= UPPER_ONLY_UP_TO:
        return {"layers": "upper", "encoder_scale": 0.9}
    return {"layers": "all", "encoder_scale": 1.0}


def fit_recipe(
    settings: TrainSettings, lora: LoraSettings, vocabulary: Sequence[str], encoder_layers: int
) -> tuple[TrainSettings, LoraSettings]:
    """The settings with each input left empty (None, or no target_modules) set from the
    recipe for the run's data (`recipe_for`) and, for the layers and the share of the
    encoder's change kept, the model's size (`for_size`)."""
    recipe = recipe_for(vocabulary)
    chosen = {**RECIPES[recipe], **for_size(recipe, encoder_layers)}

    def fill(given):
        empty = {
            name: value
            for name, value in chosen.items()
            if name in {f.name for f in dataclasses.fields(given)}
            and getattr(given, name) in (None, ())
        }
        return dataclasses.replace(given, **empty)

    return fill(settings), fill(lora)


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
    settings: TrainSettings | None = None  # the recipe as run (fit_recipe's choices made)
    lora: LoraSettings | None = None


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

    @classmethod
    def for_model(cls, processor, model) -> Collator:
        """The collator of `model`'s own padding and start tokens."""
        return cls(
            processor.feature_extractor,
            pad_token_id=model.config.pad_token_id,
            decoder_start_token_id=model.config.decoder_start_token_id,
        )

    def __call__(self, audios: Sequence[np.ndarray], labels: Sequence[list[int]]) -> dict:
        features = self.feature_extractor(
            [samples(a) for a in audios], sampling_rate=SAMPLE_RATE, return_tensors="pt"
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


# ---------------------------------------------------------------- the hold toward the base model


def term_token_ids(tokenizer, terms: Sequence[str]) -> list[list[int]]:
    """The token sequences a label spells each term with: after a space (as within a
    sentence, and as the labeller starts every text) and without one."""
    return [
        tokenizer.encode(form, add_special_tokens=False)
        for term in terms
        for form in (" " + term, term)
    ]


def spans(labels: torch.Tensor, term_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Where in each label row one of the token sequences `term_ids` occurs."""
    found = torch.zeros_like(labels, dtype=torch.bool)
    for row, sequence in enumerate(labels.tolist()):
        for ids in term_ids:
            n = len(ids)
            for start in range(len(sequence) - n + 1):
                if sequence[start : start + n] == list(ids):
                    found[row, start : start + n] = True
    return found


@torch.no_grad()
def base_logits(model, inputs: dict, encoded: torch.Tensor | None = None) -> torch.Tensor:
    """The base model's own predictions on a batch: the peft model with its adapter off;
    given `encoded` (its encoder's output on the batch's audio), only its decoder runs."""
    from transformers.modeling_outputs import BaseModelOutput

    if encoded is not None:
        inputs = {k: v for k, v in inputs.items() if k != "input_features"}
        inputs["encoder_outputs"] = BaseModelOutput(last_hidden_state=encoded)
    with model.disable_adapter():
        return model(**inputs).logits.float()


# What the encoder makes of each training example that training cannot change, kept, at most
# this many bytes in each process: for tiny.en 2.3 MB for the frozen lower layers' output and
# as much for the base model's whole encoder output (3.1 MB each for base, 7.7 MB for
# large-v3). A cue takes up to three keys (one a speed), so about 150 cues of tiny.en fit;
# past the limit what is missing is computed each time it is needed.
ENCODED_ONCE_BYTES = 2 * 1024**3


def frozen_layers(model) -> int:
    """How many of the peft model's lowest encoder layers training leaves as they are: those
    below the first layer with a trained weight (all of them where the encoder has none)."""
    layers = model.get_base_model().get_encoder().layers
    for index, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return index
    return len(layers)


def encoder_lower(encoder, features: torch.Tensor, layers: int) -> torch.Tensor:
    """The hidden states of a WhisperEncoder after its convolutions, its positions and its
    first `layers` layers, as its own forward computes them where the model has no dropout
    and no layer drop (not `varies_in_training`, as Whisper's checkpoints)."""
    hidden = torch.nn.functional.gelu(encoder.conv1(features))
    hidden = torch.nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    positions = torch.arange(encoder.embed_positions.num_embeddings, device=hidden.device)
    hidden = hidden + encoder.embed_positions(positions)
    for layer in encoder.layers[:layers]:
        hidden = layer(hidden, None)
    return hidden


def encoder_upper(encoder, hidden: torch.Tensor, layers: int) -> torch.Tensor:
    """The rest of the encoder from `encoder_lower`'s hidden states: its layers from `layers`
    on and its last norm, the encoder's output."""
    for layer in encoder.layers[layers:]:
        hidden = layer(hidden, None)
    return encoder.layer_norm(hidden)


@dataclass
class EncodedOnce:
    """What the encoder makes of each training example as heard (its window at one of its
    speeds), computed the first time the example is trained and kept: the output of the
    `frozen` lowest layers (frozen_layers), the same in the trained model and the base
    model, and the base model's whole encoder output for the pull (with `base`). The
    trained model runs its encoder from the first adapted layer on, and from an example's
    second time on neither model runs the frozen layers again, nor the pull's base model
    its encoder. Only for a model that hears the same audio the same way in
    training (`varies_in_training`)."""

    frozen: int = 0
    base: bool = True
    limit: int = ENCODED_ONCE_BYTES
    kept: dict = field(default_factory=dict)
    kept_bytes: int = 0

    @torch.no_grad()
    def __call__(
        self, model, features: torch.Tensor, keys: Sequence
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frozen layers' output and the base model's encoder output (None without
        `base`) of each row of `features`, the rows named by `keys` (any hashable name of
        the audio as heard). Each missing row is encoded on its own, so that its outputs do
        not depend on the batch it first came in (a resumed run reads the very same)."""
        rows = []
        with model.disable_adapter():
            encoder = model.get_base_model().get_encoder()
            for row, key in zip(features, keys, strict=True):
                found = self.kept.get(key)
                if found is None:
                    lower = encoder_lower(encoder, row[None], self.frozen)
                    base = encoder_upper(encoder, lower, self.frozen)[0] if self.base else None
                    found = (lower[0], base)
                    size = sum(t.nbytes for t in found if t is not None)
                    if self.kept_bytes + size <= self.limit:
                        self.kept[key] = tuple(
                            None if t is None else t.to("cpu", copy=True) for t in found
                        )
                        self.kept_bytes += size
                rows.append([None if t is None else t.to(features.device) for t in found])
        lower = torch.stack([lower for lower, _ in rows])
        return lower, torch.stack([base for _, base in rows]) if self.base else None


def varies_in_training(config) -> bool:
    """Whether the Whisper model of `config` hears the same audio differently from one
    training step to the next: its own dropout, layer drop or SpecAugment (Whisper's
    checkpoints have none of them)."""
    names = ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop")
    return any(getattr(config, name, 0) for name in names) or bool(
        getattr(config, "apply_spec_augment", False)
    )


def divergence(
    teacher: torch.Tensor, logits: torch.Tensor, where: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) of the label tokens `where` is true, summed; both softened by
    `temperature`, times its square."""
    if not where.any():
        return logits.sum() * 0.0  # keeps the graph (and every process's backward) whole
    teacher_log = torch.log_softmax(teacher[where] / temperature, dim=-1)
    student_log = torch.log_softmax(logits[where].float() / temperature, dim=-1)
    return temperature**2 * torch.sum(teacher_log.exp() * (teacher_log - student_log))


def hold_loss(
    model,
    inputs: dict,
    logits: torch.Tensor,
    term_ids: Sequence[Sequence[int]],
    encoded: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The pull toward the base model: the KL divergence from its predictions on every label
    token outside the taught terms (the words around them, timestamps, the end, all of a
    replayed general example), averaged over all label tokens as the cross-entropy is.
    `encoded`: the base encoder's output on the batch, where it is known (EncodedOnce)."""
    labels = inputs["labels"]
    valid = labels != -100
    held = valid & ~spans(labels, term_ids)
    teacher = base_logits(model, inputs, encoded)
    return divergence(teacher, logits, held, temperature) / valid.sum().clamp(min=1)


# ---------------------------------------------------------------- the change held off the rest
# Each layer's input moment is kept as a factor F (K ~ F F^T) of at most this many of its
# largest directions: exact for inputs this wide or narrower, and light for wider ones
# (large-v3's feed-forward input is 5120 wide).
MOMENT_DIRECTIONS = 1024


@torch.no_grad()
def input_moments(
    model, collator, labeller, examples, targets: Sequence[str] | str, term_ids=()
) -> dict[str, tuple[torch.Tensor, float]]:
    """For each Linear of the (plain, base) `model` that LoRA adapts with target_modules
    `targets` (as LoraSettings.peft_targets gives them, matched by peft's own rule): the
    second moment K = E[x x^T] of its input over `examples` read with their transcripts
    (teacher forced, one at a time, so no padding is counted but the 30 s window's own), and
    the base output's energy tr(W K W^T); keyed by the module's name. The decoder's
    positions that predict a token of `term_ids` are left out: the taught words are free to
    change. Layers that read the same input (a layer's q, k and v, every decoder layer's
    cross-attention k and v) share its moment, computed once."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=targets)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    kept: list[torch.Tensor] = []  # the decoder positions counted in this example
    read: dict[tuple[int, bool], tuple] = {}  # this example's inputs read so far

    def record(name):
        def hook(module, args):
            x = args[0]
            masked = name.startswith("model.decoder") and x.shape[-2] == kept[0].shape[-1]
            found = read.get((id(x), masked))
            if found is None or found[0]() is not x:  # an id is an input's only while it lives
                rows = x[kept[0].to(x.device)] if masked else x
                rows = rows.reshape(-1, rows.shape[-1]).float().cpu()
                found = read[id(x), masked] = (weakref.ref(x), rows.T @ rows, rows.shape[0])
            sums[name] = sums.get(name, 0) + found[1]
            counts[name] = counts.get(name, 0) + found[2]

        return hook

    linears = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and check_target_module_exists(config, name)
    }
    handles = [m.register_forward_pre_hook(record(n)) for n, m in linears.items()]
    device = next(model.parameters()).device
    try:
        model.eval()
        for e in examples:
            inputs = collator([e.audio], [labeller.labels(e, timestamps=False)])
            labels = inputs["labels"]  # the model reads them shifted right
            kept[:] = [(labels != -100) & ~spans(labels, term_ids)]
            model(**{k: v.to(device) for k, v in inputs.items()})
            read.clear()
    finally:
        for h in handles:
            h.remove()
    moments = {}
    for name, m in linears.items():
        k = sums[name] / counts[name]
        w = m.weight.detach().float().cpu()
        moments[name] = (k, float(((w @ k) * w).sum()))
    return moments


def mean_moments(a: dict, b: dict) -> dict:
    """The moments of two sets of speech, each counted as half (energies are linear in K),
    of the layers both measured."""
    return {
        name: ((a[name][0] + b[name][0]) / 2, (a[name][1] + b[name][1]) / 2)
        for name in a
        if name in b
    }


def moment_factor(k: torch.Tensor) -> torch.Tensor:
    """F with F F^T = K over K's MOMENT_DIRECTIONS largest directions (all, if fewer), and
    every direction as large as the smallest of them (a multiple of the identity keeps all)."""
    values, vectors = torch.linalg.eigh(k.double())  # ascending
    cut = max(0, len(values) - MOMENT_DIRECTIONS)
    cut = int(torch.searchsorted(values, values[cut]))  # the first of any tied with it
    values, vectors = values[cut:], vectors[:, cut:]
    return (vectors * values.clamp(min=0).sqrt()).float()


def held_layers(model, moments: dict) -> list[tuple[torch.nn.Module, torch.Tensor, float]]:
    """The peft `model`'s adapted layers, each with its input moment's factor (on the
    layer's device) and its base output's energy, for change_penalty. `moments` names
    every adapted layer; one whose moment is None is not held."""
    held = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not lora_a or "default" not in lora_a:
            continue
        moment = moments[name.removeprefix("base_model.model.")]
        if moment is None:
            continue
        k, energy = moment
        device = lora_a["default"].weight.device
        held.append((module, moment_factor(k).to(device), energy))
    return held


def change_penalty(held: Sequence[tuple[torch.nn.Module, torch.Tensor, float]]) -> torch.Tensor:
    """How much the adapted layers' outputs move on the speech they are held to, each over
    its base output's energy: tr(dW K dW^T) / tr(W K W^T) with dW = scaling * B A, averaged
    over the layers."""
    total = 0.0
    for module, factor, energy in held:
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        projected = a @ factor.to(a.dtype)  # r x directions
        inner = projected @ projected.T  # A K A^T, r x r
        total = total + module.scaling["default"] ** 2 * (inner * (b.T @ b)).sum() / energy
    return total / max(1, len(held))


# ---------------------------------------------------------------- evaluation


def is_multilingual(model) -> bool:
    """openai/whisper's rule: English-only models have 51864 tokens, multilingual ones more."""
    return model.config.vocab_size >= MULTILINGUAL_VOCAB


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
            sampling_rate=SAMPLE_RATE,
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


def learn_vocabulary(model, processor, windows, language, settings) -> list[str]:
    """The user's `vocabulary`, then the words of the training transcripts that the base
    model missed (whisper_ft/vocabulary.py)."""
    references, heard = [], []
    if settings.learn_vocabulary:
        references = ["\n".join(c.text for c in e.cues) or e.text for e in windows]
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
    if amount == 0 or factor == 1.0 or length > N_SAMPLES:
        return example
    audio = np.interp(
        np.arange(length) * factor, np.arange(example.audio.size), samples(example.audio)
    ).astype(np.float32)
    cues = tuple(
        dataclasses.replace(c, start=c.start / factor, end=c.end / factor) for c in example.cues
    )
    return dataclasses.replace(example, audio=audio, cues=cues)


def examples_of(window: Example, settings: TrainSettings) -> list[Example]:
    """The examples a window is trained as: itself, or each of its cues alone (sentences),
    and then itself as well where it holds several (whole_windows)."""
    if not settings.sentences:
        return [window]
    whole = [window] if settings.whole_windows and len(window.cues) > 1 else []
    return sentences(window) + whole


def cut_onset(example: Example, rng: random.Random) -> tuple[Example, int]:
    """The example with a random share of its audio before its first cue cut away, its cue
    times moved to match; and how many samples were cut."""
    if not example.cues:
        return example, 0
    lead = int(example.cues[0].start * SAMPLE_RATE)
    cut = min(int(rng.random() * lead), example.audio.size - 1)
    if cut <= 0:
        return example, 0
    shift = cut / SAMPLE_RATE
    cues = tuple(
        dataclasses.replace(c, start=max(c.start - shift, 0.0), end=max(c.end - shift, 0.0))
        for c in example.cues
    )
    audio = example.audio[cut:]  # a span stays on disk
    return dataclasses.replace(example, audio=audio, cues=cues), cut


def epoch_score(entry: dict, report: TrainReport) -> float:
    """Lower is better: validation WER, plus the rise in general-speech WER when that is
    measured; without validation, the later epoch."""
    if "wer" not in entry and "general_wer" not in entry:
        return -entry["epoch"]
    rise = entry.get("general_wer", 0.0) - (report.general_wer_before or 0.0)
    return entry.get("wer", 0.0) + rise


def noise(a: float, b: float, words: int) -> float:
    """One standard deviation of the difference between two WERs (in points) of one set of
    `words` words, each WER's word errors taken as a Poisson count. A user's validation set
    is often a few dozen words, where one word is several points."""
    return 100 / words * math.sqrt((a + b) * words / 100)


def keeps(entry: dict, history: Sequence[dict], report: TrainReport, words: dict) -> bool:
    """Whether the epoch `entry` (the last of `history`) is kept: the best so far, or a later
    one that no scored set (`words`: each set's word count) tells apart from the best. A
    later epoch has trained longer on the user's words; an earlier one is kept only where
    the later ones are measurably worse."""
    best = min(history, key=lambda e: epoch_score(e, report))
    return best is entry or all(
        entry[key] - best[key] <= noise(entry[key], best[key], n)
        for key, n in words.items()
        if n and key in entry and key in best
    )


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
        [samples(e.audio) for e in sample], sampling_rate=SAMPLE_RATE, return_tensors="pt"
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


@dataclass(frozen=True)
class Hooks:
    """What a benchmark may change in a run without changing the recipe (bench/research.py):
    `on_epoch(model, entry, report)` after each epoch's scoring; `loss(model, inputs,
    output)` instead of the cross-entropy; `prompt(example, vocabulary, labeller, rng)`, the
    prompt an example reads (default: none); `features(input_features, frames, rng)`, a
    batch's log-mel features as trained (`frames`: each row's frames of audio before the
    padding), the same for the model and for the pull's base model; `moments(own)`, given
    the layers' input moments on the run's own speech (input_moments), those to hold the
    change off instead (None for a layer not held)."""

    on_epoch: Callable[[object, dict, TrainReport], None] | None = None
    loss: Callable[[object, dict, object], torch.Tensor] | None = None
    prompt: Callable[[Example, Sequence[str], Labeller, random.Random], list[int]] | None = None
    features: Callable[[torch.Tensor, list[int], random.Random], torch.Tensor] | None = None
    moments: Callable[[dict], dict] | None = None


def no_prompt(example: Example, vocabulary, labeller, rng: random.Random) -> list[int]:
    """The recipe's prompt: none, the weights learn the words. It draws one number all the
    same (whether to read one), so that a run draws what it would draw with a prompting hook
    that reads none: bench/research.py's recipes at prompt_fraction 0 are this recipe."""
    rng.random()
    return []


@dataclass
class Run:
    """What the phases of one run share: set up in phases 1-6, advanced by phase 7."""

    settings: TrainSettings
    dataset: Dataset
    general: Dataset | None
    hooks: Hooks
    run_files: RunFiles
    accelerator: object
    rng: random.Random
    processor: object
    model: object
    language: str
    report: TrainReport
    labeller: Labeller | None = None
    collator: Collator | None = None
    windows: list[Example] = field(default_factory=list)  # the user's, then general speech
    own: int = 0  # windows[:own] are the user's
    replayed: int = 0  # general examples mixed into each epoch
    term_ids: list[list[int]] = field(default_factory=list)  # the vocabulary's tokens
    held: list = field(default_factory=list)  # the adapted layers with them (held_layers)
    encoded_once: EncodedOnce | None = None  # the encoder's work kept, where it can be
    identity: dict = field(default_factory=dict)  # what a resumed run must share with this
    saved: object = None  # the state resumed from (runstate.Saved)
    position: object = None  # where the run stands (runstate.Position)
    optimizer: object = None
    scheduler: object = None
    total_steps: int = 0
    epochs: int = 0
    best_state: dict | None = None  # the LoRA weights of the epoch kept so far
    torch_rng: dict | None = None  # torch's random state after the last whole step
    restore: dict | None = None  # torch's random state to set before the first step trained
    started: float = 0.0
    first_step: int = 0

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def score(self, examples: Sequence[Example]) -> float:
        """WER of the weights as they stand, as served: the weights alone."""
        model = self.accelerator.unwrap_model(self.model)
        return evaluate(
            model,
            self.processor,
            examples,
            self.language,
            self.settings.task,
            self.settings.eval_batch_size,
        )

    def emit(self, event: str, **fields) -> None:
        if self.main:
            progress.emit(event, **fields)


def finetune(
    base_dir: Path,
    dataset: Dataset,
    settings: TrainSettings,
    lora: LoraSettings,
    general: Dataset | None = None,
    run_files: RunFiles = RunFiles(),
    hooks: Hooks = Hooks(),
):
    """Train LoRA on `dataset`, keep the epoch with the best validation WER, return the
    model with its adapter, its processor and a TrainReport.

    `general`, when given, is general speech in the same language: its train windows are
    replayed among the user's (at most as many per epoch as the user has windows), and its
    validation windows measure forgetting (WER before and after, `general_wer_*`).

    The run is an accelerate run: started by `accelerate launch` or `torchrun` with several
    processes (CPU or GPUs), each process trains on its own share of every epoch's batches and
    the gradients are averaged; only the main process scores, logs and keeps the best epoch
    (the others return a model that is not to be exported)."""
    settings, lora = settings.validate(), lora.validate()
    # 1. The processes, the random state, the base model and the language of the speech.
    run = start_run(base_dir, dataset, settings, general, hooks, run_files)
    # 2. The examples: each cue alone (sentences) or whole windows; the user's, then general
    # speech; and the run state to continue, if resuming.
    make_examples(run, base_dir, lora)
    # 3. Before training (the main process): WERs, and the words the base model misses.
    score_base_model(run)
    # 4. The recipe's inputs left empty, chosen by whether the run teaches new words.
    run.settings, lora = fit_recipe(
        run.settings, lora, run.report.vocabulary, run.model.config.encoder_layers
    )
    run.report.settings, run.report.lora = run.settings, lora
    logger.info(
        "recipe for data with %s: LoRA on %s of %s layers (the encoder's change kept at %g), "
        "learning_rate %g, change_weight %g",
        recipe_for(run.report.vocabulary),
        ",".join(lora.target_modules),
        lora.layers,
        lora.encoder_scale,
        run.settings.learning_rate,
        run.settings.change_weight,
    )
    # 5. What the change is held off: the base model's layers' inputs on the speech.
    moments = measure_inputs(run, lora)
    # 6. LoRA, the optimizer and the schedule (linear warm-up, linear decay).
    add_lora(run, lora, moments)
    # 7. The epochs: each one's batches shared among the processes, the best epoch kept.
    while run.position.epoch <= run.epochs and run.position.step < run.total_steps:
        epoch, seen = run.position.epoch, train_epoch(run)
        end_epoch(run, epoch, seen)
    # 8. The best epoch's weights (the main process).
    return keep_best(run)


def start_run(base_dir, dataset, settings, general, hooks, run_files) -> Run:
    from accelerate import Accelerator
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    accelerator = Accelerator(
        cpu=processes().device.type == "cpu",
        mixed_precision=mixed_precision(),
        gradient_accumulation_steps=settings.gradient_accumulation,
    )
    torch.manual_seed(settings.seed)
    # The main process's generator draws every epoch's order (sent to the others) and its
    # own augmentation; each other process draws its augmentation from its own.
    rng = random.Random(settings.seed + accelerator.process_index)
    processor = WhisperProcessor.from_pretrained(base_dir)
    model = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    model.to(accelerator.device)
    language = settings.language or detect_language(model, processor, dataset.train)
    if not is_multilingual(model) and (language != "en" or settings.task != "transcribe"):
        raise ValueError(
            f"the base model is English-only; it cannot learn language {language!r} "
            f"with task {settings.task!r}: use a multilingual base model such as `base`"
        )
    return Run(
        settings=settings,
        dataset=dataset,
        general=general,
        hooks=hooks,
        run_files=run_files,
        accelerator=accelerator,
        rng=rng,
        processor=processor,
        model=model,
        language=language,
        report=TrainReport(language, len(dataset.train), len(dataset.validation)),
    )


def make_examples(run: Run, base_dir: Path, lora: LoraSettings) -> None:
    from whisper_ft import runstate

    run.labeller = Labeller(
        run.processor.tokenizer, run.language, run.settings.task, is_multilingual(run.model)
    )
    run.collator = Collator.for_model(run.processor, run.model)
    shape = functools.partial(examples_of, settings=run.settings)
    replay = list(run.general.train) if run.general is not None else []
    run.windows = [s for e in run.dataset.train for s in shape(e)]
    run.own = len(run.windows)
    run.windows += [s for e in replay for s in shape(e)]
    for e in run.windows:  # a transcript too long for the decoder fails here, before training
        run.labeller.labels(e, timestamps=True)
    run.replayed = min(len(run.windows) - run.own, run.own)
    identity = {
        "base_model": str(base_dir),
        "examples": [run.own, len(run.windows) - run.own],
        "audio_samples": sum(e.audio.size for e in run.windows),
        "train": dataclasses.asdict(run.settings),
        "lora": dataclasses.asdict(lora),
        "processes": run.accelerator.num_processes,
    }
    run.identity = json.loads(json.dumps(identity))  # as it reads back from state.json
    resume_from = run.run_files.resume_from
    if resume_from is not None:
        run.saved = runstate.load_run(resume_from, run.identity, run.accelerator.process_index)
    run.position = run.saved.position if run.saved else runstate.Position()


def score_base_model(run: Run) -> None:
    from accelerate.utils import broadcast_object_list

    before, general = run.position.before, run.general
    if run.saved is None and run.main:
        scored = {
            ("wer", "validation"): run.dataset.validation,
            ("general_wer", "general speech"): general.validation if general else [],
        }
        before["words"] = {}
        for (key, name), examples in scored.items():
            if examples:
                before["words"][key] = reference_words([e.text for e in examples], run.language)
                before[key] = run.score(examples)
                logger.info("%s WER before training: %.2f%%", name, before[key])
        before["vocabulary"] = learn_vocabulary(
            run.model, run.processor, run.dataset.train, run.language, run.settings
        )
    (run.position.before,) = broadcast_object_list([before])
    run.report.wer_before = run.position.before.get("wer")
    run.report.general_wer_before = run.position.before.get("general_wer")
    run.report.vocabulary = run.position.before.get("vocabulary", [])
    run.term_ids = term_token_ids(run.processor.tokenizer, run.report.vocabulary)


def measure_inputs(run: Run, lora: LoraSettings) -> dict | None:
    """The adapted layers' input moments on the user's examples (where the decoder writes
    the vocabulary left out) and, as much again, on general_data's (each process its own,
    the same)."""
    if run.settings.change_weight <= 0:
        return None
    targets = lora.peft_targets(run.model.config.encoder_layers)
    own = run.windows[: run.own]
    moments = input_moments(run.model, run.collator, run.labeller, own, targets, run.term_ids)
    general = run.windows[run.own :]
    if general:
        found = input_moments(run.model, run.collator, run.labeller, general, targets)
        moments = mean_moments(moments, found)
    return moments if run.hooks.moments is None else run.hooks.moments(moments)


def add_lora(run: Run, lora: LoraSettings, moments: dict | None) -> None:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from whisper_ft import runstate

    settings, accelerator = run.settings, run.accelerator
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.peft_targets(run.model.config.encoder_layers),
        bias="none",
    )
    model = get_peft_model(run.model, config)
    if moments is not None:
        run.held = held_layers(model, moments)
    varies = run.hooks.features is not None or settings.random_onset
    if not (varies or varies_in_training(model.config)):
        # Each example's audio is heard the same way every epoch.
        run.encoded_once = EncodedOnce(frozen_layers(model), base=settings.hold_weight > 0)
    if accelerator.device.type == "cuda":
        model.base_model.model.gradient_checkpointing_enable()
        model.base_model.model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("LoRA: %d trainable parameters (r=%d, alpha=%d)", trainable, lora.rank, lora.alpha)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate
    )
    schedule(run, optimizer)
    if run.saved is not None:
        set_peft_model_state_dict(model, run.saved.adapter)
        run.optimizer.load_state_dict(run.saved.optimizer)
        run.scheduler.load_state_dict(run.saved.scheduler)
        run.rng.setstate(run.saved.python_rng)
        logger.info(
            "resuming %s at epoch %d, step %d/%d",
            run.run_files.resume_from,
            run.position.epoch,
            run.position.step,
            run.total_steps,
        )
    run.model, run.optimizer = accelerator.prepare(model, run.optimizer)
    run.best_state = run.saved.best if run.saved else None
    run.started, run.first_step = time.monotonic(), run.position.step
    run.restore = run.saved.torch_rng if run.saved else None
    run.torch_rng = run.restore if run.saved else runstate.torch_random_state()
    logger.info(
        "training %d examples (+%d of general speech), %d steps (%d epochs, batch %d x %d x %d "
        "processes) on %s",
        run.own,
        run.replayed,
        run.total_steps,
        run.epochs,
        settings.batch_size,
        settings.gradient_accumulation,
        accelerator.num_processes,
        accelerator.device.type,
    )


def schedule(run: Run, optimizer) -> None:
    """The steps of the run and its learning rate: linear warm-up, then linear decay."""
    settings = run.settings
    batches = math.ceil((run.own + run.replayed) / settings.batch_size)
    processes = run.accelerator.num_processes
    per_epoch = math.ceil(math.ceil(batches / processes) / settings.gradient_accumulation)
    total = settings.max_steps or max(1, round(per_epoch * settings.num_train_epochs))
    warmup = max(1, int(total * settings.warmup_fraction))
    run.total_steps, run.epochs = total, math.ceil(total / per_epoch)
    run.optimizer = optimizer
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup + 1)))
    )


def batch_of(run: Run, indices: list[int]) -> dict:
    """A batch as trained: each window at a random speed, with or without timestamps."""
    settings, rng = run.settings, run.rng
    prompt = run.hooks.prompt or no_prompt
    chosen = [perturb_speed(run.windows[i], settings.speed_perturbation, rng) for i in indices]
    cuts = [0] * len(chosen)
    if settings.random_onset:
        chosen, cuts = map(list, zip(*(cut_onset(e, rng) for e in chosen), strict=True))
    labels = [
        run.labeller.labels(
            e,
            bool(e.cues) and rng.random() < settings.timestamp_fraction,
            prompt(e, run.report.vocabulary, run.labeller, rng),
        )
        for e in chosen
    ]
    batch = run.collator([e.audio for e in chosen], labels)
    if run.hooks.features is not None:
        frames = [e.audio.size // HOP_LENGTH for e in chosen]  # a span's, without reading it
        batch["input_features"] = run.hooks.features(batch["input_features"], frames, rng)
    lengths = [e.audio.size for e in chosen]  # as perturbed: with the window, the speed
    return {
        **batch,
        "windows": torch.tensor(indices),
        "lengths": torch.tensor(lengths),
        "cuts": torch.tensor(cuts),
    }


def train_epoch(run: Run) -> list[int]:
    """One epoch (or what is left of it, resuming); returns the windows this process
    trained on. Canceled or interrupted, the run state is saved as it stood after its last
    whole step."""
    from accelerate.utils import broadcast_object_list

    from whisper_ft import runstate

    run.model.train()
    epoch_rng = run.rng.getstate()
    order = None
    if run.main:
        order = list(range(run.own)) + run.rng.sample(
            range(run.own, len(run.windows)), run.replayed
        )
        run.rng.shuffle(order)
    (order,) = broadcast_object_list([order])
    loader = run.accelerator.prepare_data_loader(
        torch.utils.data.DataLoader(
            order,
            batch_size=run.settings.batch_size,
            collate_fn=lambda indices: batch_of(run, indices),
            generator=torch.Generator(),
        )
    )
    position = run.position
    skip = position.steps_in_epoch * run.settings.gradient_accumulation  # done before resuming
    seen: list[int] = []
    losses_kept = len(position.losses)
    try:
        for index, inputs in enumerate(loader):
            if index < skip:  # drawn again, as the interrupted run drew it, not trained
                continue
            if run.restore is not None:  # dropout's state where the resumed run stopped
                runstate.set_torch_random_state(run.restore)
                run.restore = None
            windows, lengths = inputs.pop("windows").tolist(), inputs.pop("lengths").tolist()
            cuts = inputs.pop("cuts").tolist()
            seen += windows
            if not train_step(run, inputs, list(zip(windows, lengths, cuts, strict=True))):
                continue
            run.torch_rng, losses_kept = runstate.torch_random_state(), len(position.losses)
            log_step(run)
            if position.step >= run.total_steps:
                break
    except BaseException:
        del position.losses[losses_kept:]
        save_state(run, epoch_rng)
        raise
    return seen


def encoder_given(model, inputs: dict, lower: torch.Tensor, frozen: int) -> dict:
    """The batch's inputs with its encoder output in place of its audio: the adapted encoder
    layers run (trained) on the frozen ones' output `lower` (EncodedOnce)."""
    from transformers.modeling_outputs import BaseModelOutput

    encoder = model.get_base_model().get_encoder()
    if encoder.is_activation_checkpointing:
        lower = lower.requires_grad_()  # as enable_input_require_grads does for reentrant use
    encoded = encoder_upper(encoder, lower, frozen)
    given = {k: v for k, v in inputs.items() if k != "input_features"}
    return {**given, "encoder_outputs": BaseModelOutput(last_hidden_state=encoded)}


def train_step(run: Run, inputs: dict, heard: list[tuple[int, int, int]]) -> bool:
    """One forward and backward pass; returns whether it ended an optimizer step. `heard`
    names each row's audio: its window, its length as trained (its speed) and the samples
    cut before its first cue."""
    accelerator, position = run.accelerator, run.position
    with accelerator.accumulate(run.model):
        model = accelerator.unwrap_model(run.model)
        encoded = None
        if run.encoded_once is None:
            output = run.model(**inputs)
        else:
            with accelerator.autocast():  # the precision the model trains in
                lower, encoded = run.encoded_once(model, inputs["input_features"], heard)
                output = run.model(**encoder_given(model, inputs, lower, run.encoded_once.frozen))
        loss = output.loss
        if run.hooks.loss is not None:
            loss = run.hooks.loss(model, inputs, output)
        if run.settings.hold_weight > 0:
            held = hold_loss(
                model, inputs, output.logits, run.term_ids, encoded, run.settings.hold_temperature
            )
            loss = loss + run.settings.hold_weight * held
        if run.held:
            loss = loss + run.settings.change_weight * change_penalty(run.held)
        accelerator.backward(loss)
        position.losses.append(loss.item())
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(run.model.parameters(), 1.0)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    if not accelerator.sync_gradients:
        return False
    run.scheduler.step()
    position.step += 1
    position.steps_in_epoch += 1
    return True


def log_step(run: Run) -> None:
    """The step's loss, learning rate and ETA (the main process)."""
    if not run.main:
        return
    position = run.position
    per_step = (time.monotonic() - run.started) / (position.step - run.first_step)
    eta = per_step * (run.total_steps - position.step)
    progress.report(
        logger,
        "step",
        "step %d/%d  epoch %d  loss %.4f  lr %.2e  %.1f s/step  ETA %.0f s",
        position.step,
        run.total_steps,
        position.epoch,
        position.losses[-1],
        run.scheduler.get_last_lr()[0],
        per_step,
        eta,
        step=position.step,
        steps=run.total_steps,
        epoch=position.epoch,
        loss=round(position.losses[-1], 4),
        eta=round(eta, 1),
    )


def end_epoch(run: Run, epoch: int, seen: list[int]) -> None:
    """Score the epoch (the main process), keep its weights if it is the best so far, save
    the run state and start the next epoch."""
    from accelerate.utils import gather_object
    from peft import get_peft_model_state_dict

    position, report = run.position, run.report
    entry = {"epoch": epoch, "step": position.step, "loss": float(np.mean(position.losses))}
    if run.accelerator.num_processes > 1:
        entry["processes"] = shares(gather_object([seen]))
    if run.main:
        score_epoch(run, entry)
        position.history.append(entry)
        run.emit("epoch", **entry)
        if run.hooks.on_epoch is not None:
            run.hooks.on_epoch(run.accelerator.unwrap_model(run.model), entry, report)
        if keeps(entry, position.history, report, position.before.get("words", {})):
            position.best_epoch = epoch
            weights = get_peft_model_state_dict(run.accelerator.unwrap_model(run.model))
            run.best_state = copy.deepcopy(weights)
    position.epoch, position.steps_in_epoch, position.losses = epoch + 1, 0, []
    save_state(run, run.rng.getstate())
    run.accelerator.wait_for_everyone()


def validation_wers(run: Run) -> dict:
    """The weights' WERs, as they stand, on the validation windows ("wer") and on general
    speech's ("general_wer"), where the run has them."""
    wers = {}
    if run.dataset.validation:
        wers["wer"] = run.score(run.dataset.validation)
    if run.general is not None and run.general.validation:
        wers["general_wer"] = run.score(run.general.validation)
    return wers


def score_epoch(run: Run, entry: dict) -> None:
    """The epoch's validation and general-speech WERs, into `entry` and the log."""
    entry.update(validation_wers(run))
    logger.info(
        "epoch %d: loss %.4f%s%s",
        entry["epoch"],
        entry["loss"],
        f", validation WER {entry['wer']:.2f}%" if "wer" in entry else "",
        f", general speech WER {entry['general_wer']:.2f}%" if "general_wer" in entry else "",
    )


def save_state(run: Run, epoch_rng: tuple) -> None:
    """This process's random state, then (the main process) the rest of the run state."""
    from peft import get_peft_model_state_dict

    from whisper_ft import runstate

    state_dir = run.run_files.state_dir
    if state_dir is None:
        return
    runstate.save_process(state_dir, run.accelerator.process_index, epoch_rng, run.torch_rng)
    if run.main:
        runstate.save_run(
            state_dir,
            run.position,
            run.identity,
            get_peft_model_state_dict(run.accelerator.unwrap_model(run.model)),
            run.best_state,
            run.optimizer.state_dict(),
            run.scheduler.state_dict(),
        )


def scale_change(model, encoder: float = 1.0, decoder: float = 1.0) -> None:
    """Scale the learned change of a LoRA model's encoder and decoder, in place: each
    adapter's lora_B times the factor (the change is B @ A), which sets the adapted weights
    between the base model's (0) and the trained ones (1)."""
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_B" in name:
                weights.mul_(encoder if ".encoder." in name else decoder)


def keep_best(run: Run):
    from peft import set_peft_model_state_dict

    model, report, position = run.accelerator.unwrap_model(run.model), run.report, run.position
    report.steps, report.seconds = position.step, time.monotonic() - run.started
    report.history, report.best_epoch = position.history, position.best_epoch
    if run.main:
        set_peft_model_state_dict(model, run.best_state)
        best = report.history[report.best_epoch - 1]
        if report.lora.encoder_scale != 1:  # the WERs of the weights that are kept
            scale_change(model, encoder=report.lora.encoder_scale)
            best = validation_wers(run)
        report.wer_after, report.general_wer_after = best.get("wer"), best.get("general_wer")
        warn_if_worse(report)
        run.emit(
            "kept",
            epoch=report.best_epoch,
            wer_before=report.wer_before,
            wer_after=report.wer_after,
        )
    return model, run.processor, report


def shares(seen_by_process: list[list[int]]) -> dict:
    """How an epoch's examples were shared among the processes: how many each trained on,
    and how many more than one trained on (only to fill the last round of batches)."""
    counts = [len(set(seen)) for seen in seen_by_process]
    union = set().union(*map(set, seen_by_process))
    return {"examples": counts, "on_several": sum(counts) - len(union)}
