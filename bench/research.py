"""Training options measured and not kept in the recipe, for benchmarks to try again.

    .venv/bin/python -m bench.finetune --sweep '{"distill_weight": 1.0}' '{"prompt_fraction": 0.5}'

They reach a run through `whisper_ft.finetune.Hooks`; BENCHMARKS.md has what each gave.
  - distill_weight, known_labels: the loss on the label tokens the base model already gets
    right is a KL divergence toward the base model's own predictions (the adapter switched
    off), with or without their cross-entropy; the tokens it gets wrong (the user's
    corrections) keep their cross-entropy.
    (The recipe's own pull, `hold_weight`, counts the taught terms' tokens as the
    corrections instead, whatever the base model predicts: whisper_ft/finetune.py.)
  - encoder_weight: a pull of the encoder's output toward the base model's on the training
    audio (the adapter switched off), so the encoder hears the training voices without
    hearing everyone else differently.
  - replay_cross_entropy: with False, an example that writes none of the run's vocabulary
    (in the benchmark, a replayed general sentence) has no cross-entropy: the recipe's pull
    alone holds it to the base model's reading, so rare sounds are not learned as new
    spellings of their own.
  - spec_augment: SpecAugment (Park et al., 2019) on the training audio: this many bands
    of mel channels (each up to 15% of them) and this many stretches of the spoken frames
    (each up to 10% of them) set to the row's mean, the model and the pull's base model
    reading the same masked features, so the words are learned from more than one cue of
    the voice.
  - change_moments: what the recipe's penalty on the layers' output change
    (`change_weight`, whisper_ft/finetune.py) is measured on. "training", the recipe's own:
    the run's examples, where the decoder writes a taught term left out, and general_data's;
    "general": instead, real recordings that the base model read (bench.finetune's longform
    recordings other than the Raven, each window with the base model's own text; read, not
    replayed); "both": the mean of the two.
  - encoder_moments: how the encoder's layers are held by that penalty. "measured", the
    recipe's: on their inputs' moments, so the encoder's change goes where the training
    speech has little energy; "isotropic": every direction alike (the identity times the
    moment's mean eigenvalue), so it is held where general speech may differ from the
    training speech as much as anywhere; "none": not held. encoder_hold: the encoder's
    layers' share of the penalty, times the decoder's (1, the recipe's: the same weight).
  - prompt_fraction, absent_prompt_fraction: some examples read the run's vocabulary as a
    prompt, some of those without the words they say (a prompt word is no proof that it was
    spoken), as the served model reads it with `use_vocabulary`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from whisper_ft.dataset import Example
from whisper_ft.finetune import (
    Hooks,
    Labeller,
    base_logits,
    divergence,
    mean_moments,
    spans,
)
from whisper_ft.vocabulary import absent_from, as_hotwords

CHANGE_MOMENTS = ("general", "training", "both")
ENCODER_MOMENTS = ("measured", "isotropic", "none")


@dataclass(frozen=True)
class Research:
    prompt_fraction: float = 0.0  # share of examples trained reading the vocabulary prompt
    absent_prompt_fraction: float = 0.5  # share of those whose prompt leaves out their words
    distill_weight: float = 0.0  # weight of the pull toward the base model (self-distillation)
    known_labels: bool = True  # train on label tokens the base model already gets right too
    encoder_weight: float = 0.0  # weight of the pull of the encoder's output toward the base's
    replay_cross_entropy: bool = True  # False: examples without a taught term are only held
    spec_augment: int = 0  # frequency bands and time stretches masked in each example
    change_moments: str = "training"  # what change_weight's change is measured on
    encoder_moments: str = "measured"  # the encoder's: as measured, isotropic, or not held
    encoder_hold: float = 1.0  # the encoder's share of that penalty, times the decoder's

    def __post_init__(self):
        if self.change_moments not in CHANGE_MOMENTS:
            raise ValueError(f"change_moments: choose one of {', '.join(CHANGE_MOMENTS)}")
        if self.encoder_moments not in ENCODER_MOMENTS:
            raise ValueError(f"encoder_moments: choose one of {', '.join(ENCODER_MOMENTS)}")
        if self.encoder_hold < 0:
            raise ValueError(f"encoder_hold must be 0 or more, not {self.encoder_hold}")

    def hooks(
        self, term_ids: Sequence[Sequence[int]] = (), general: dict | None = None, **given
    ) -> Hooks:
        """The run's hooks, with `given` ones (on_epoch); `term_ids`, the token sequences
        of the run's vocabulary (whisper_ft.finetune.term_token_ids); `general`, the
        adaptable layers' input moments on real recordings (whisper_ft.finetune's
        input_moments), for change_moments."""
        corrections = self.distill_weight > 0 or not self.known_labels
        held_only = not self.replay_cross_entropy
        moments = None
        encoder_as_measured = self.encoder_moments == "measured" and self.encoder_hold == 1.0
        if self.change_moments != "training" or not encoder_as_measured:
            if self.change_moments != "training" and not general:
                raise ValueError("change_moments: needs the layers' input moments")

            def moments(own):
                if self.change_moments == "general":
                    own = general
                elif self.change_moments == "both":
                    own = mean_moments(general, own)
                return encoder_held(own, self.encoder_moments, self.encoder_hold)

        loss = None
        if corrections or self.encoder_weight > 0 or held_only:

            def loss(model, inputs, output):
                total = output.loss
                if held_only:
                    total = taught_rows_loss(inputs, output.logits, term_ids)
                if corrections:
                    total = corrections_loss(
                        model, inputs, output.logits, self.distill_weight, self.known_labels
                    )
                if self.encoder_weight > 0:
                    total = total + self.encoder_weight * encoder_drift(model, inputs, output)
                return total

        def prompt(example, vocabulary, labeller, rng):
            return training_prompt(example, vocabulary, labeller, self, rng)

        features = None
        if self.spec_augment > 0:

            def features(batch, frames, rng):
                return spec_augment(batch, frames, self.spec_augment, rng)

        return Hooks(loss=loss, prompt=prompt, features=features, moments=moments, **given)


def encoder_held(moments: dict, how: str, weight: float = 1.0) -> dict:
    """The layers' input moments with the encoder's as `how` says: "measured", as given;
    "isotropic", each the identity times its mean eigenvalue (every direction of the
    change held alike, as much in all as the measured moment holds); "none", None (the
    encoder's change not held); each of the encoder's times `weight`."""
    held = {}
    for name, (k, energy) in moments.items():
        if name.startswith("model.encoder."):
            if how == "none":
                held[name] = None
                continue
            if how == "isotropic":
                k = torch.eye(k.shape[0], dtype=k.dtype) * (torch.trace(k) / k.shape[0])
            k = k * weight
        held[name] = (k, energy)
    return held


def spec_augment(
    features: torch.Tensor, frames: Sequence[int], masks: int, rng: random.Random
) -> torch.Tensor:
    """`masks` bands of mel channels (up to 15% of them each) and `masks` stretches of each
    row's spoken frames (up to 10% of them each) set to that row's mean over its speech;
    the padding after the speech is left as it is."""
    features = features.clone()
    channels, width = features.shape[1], features.shape[2]
    for row, spoken in enumerate(frames):
        spoken = max(1, min(spoken, width))
        speech = features[row, :, :spoken]
        mean = speech.mean()
        for _ in range(masks):
            band = rng.randint(0, int(0.15 * channels))
            low = rng.randint(0, channels - band)
            speech[low : low + band, :] = mean
            stretch = rng.randint(0, int(0.1 * spoken))
            start = rng.randint(0, spoken - stretch)
            speech[:, start : start + stretch] = mean
    return features


def corrections_loss(
    model, inputs: dict, logits: torch.Tensor, known_weight: float, known_labels: bool
) -> torch.Tensor:
    """Cross-entropy on the label tokens the base model gets wrong (the user's corrections),
    and on the tokens it already gets right a KL divergence toward the base model's own
    distribution (the adapter switched off) with weight `known_weight`; with `known_labels`
    those tokens also keep their cross-entropy. Both are averaged over all label tokens."""
    labels = inputs["labels"]
    teacher = base_logits(model, inputs)
    valid = labels != -100
    known = valid & (teacher.argmax(-1) == labels)
    ce = token_cross_entropy(logits, labels)
    trained = valid if known_labels else valid & ~known
    total = valid.sum().clamp(min=1)
    loss = ce[trained].sum() / total
    if known_weight > 0:
        loss = loss + known_weight * divergence(teacher, logits, known) / total
    return loss


def taught_rows_loss(
    inputs: dict, logits: torch.Tensor, term_ids: Sequence[Sequence[int]]
) -> torch.Tensor:
    """The cross-entropy of the examples that write a taught term, averaged over all label
    tokens as the recipe's is: the others (replayed general speech) are left to the pull."""
    labels = inputs["labels"]
    valid = labels != -100
    taught = spans(labels, term_ids).any(dim=1, keepdim=True) & valid
    return token_cross_entropy(logits, labels)[taught].sum() / valid.sum().clamp(min=1)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each label token's cross-entropy (0 where the label is -100)."""
    return torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )


def encoder_drift(model, inputs: dict, output) -> torch.Tensor:
    """How far the adapted encoder's output has moved from the base model's on this audio:
    the squared distance over the base output's squared norm (0: unchanged)."""
    with torch.no_grad(), model.disable_adapter():
        base = model.get_encoder()(inputs["input_features"]).last_hidden_state.float()
    moved = output.encoder_last_hidden_state.float() - base
    return moved.pow(2).sum() / base.pow(2).sum().clamp(min=1e-6)


def training_prompt(
    example: Example,
    vocabulary: Sequence[str],
    labeller: Labeller,
    research: Research,
    rng: random.Random,
) -> list[int]:
    """The prompt a training window reads: none (1 - prompt_fraction of the time), the
    served vocabulary, or (absent_prompt_fraction of the prompted windows) the vocabulary
    without the words this window says: a negative example, so that the model does not
    write a prompt word it did not hear."""
    if rng.random() >= research.prompt_fraction:
        return []
    if research.absent_prompt_fraction and rng.random() < research.absent_prompt_fraction:
        return labeller.prompt_ids(as_hotwords(absent_from(vocabulary, example.text)))
    return labeller.prompt_ids(as_hotwords(vocabulary))
