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
from whisper_ft.finetune import Hooks, Labeller, base_logits, divergence
from whisper_ft.vocabulary import absent_from, as_hotwords


@dataclass(frozen=True)
class Research:
    prompt_fraction: float = 0.0  # share of examples trained reading the vocabulary prompt
    absent_prompt_fraction: float = 0.5  # share of those whose prompt leaves out their words
    distill_weight: float = 0.0  # weight of the pull toward the base model (self-distillation)
    known_labels: bool = True  # train on label tokens the base model already gets right too
    encoder_weight: float = 0.0  # weight of the pull of the encoder's output toward the base's

    def hooks(self, **given) -> Hooks:
        """The run's hooks, with `given` ones (on_epoch)."""
        corrections = self.distill_weight > 0 or not self.known_labels
        loss = None
        if corrections or self.encoder_weight > 0:

            def loss(model, inputs, output):
                total = output.loss
                if corrections:
                    total = corrections_loss(
                        model, inputs, output.logits, self.distill_weight, self.known_labels
                    )
                if self.encoder_weight > 0:
                    total = total + self.encoder_weight * encoder_drift(model, inputs, output)
                return total

        def prompt(example, vocabulary, labeller, rng):
            return training_prompt(example, vocabulary, labeller, self, rng)

        return Hooks(loss=loss, prompt=prompt, **given)


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
    ce = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )
    trained = valid if known_labels else valid & ~known
    total = valid.sum().clamp(min=1)
    loss = ce[trained].sum() / total
    if known_weight > 0:
        loss = loss + known_weight * divergence(teacher, logits, known) / total
    return loss


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
