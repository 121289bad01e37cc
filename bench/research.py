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
  - general_change_weight: a penalty on how much each adapted layer's output would change on
    general speech, from the second moment of the layer's input over real recordings that
    the base model read (bench.finetune computes it before training): tr(dW K dW^T) over
    tr(W K W^T), averaged over the adapted layers. Nothing is replayed, and the change is
    pushed into the directions general speech does not use.
    change_moments: what K is measured on. "general": those recordings; "training": the
    run's own training windows with their transcripts, every decoder position that predicts
    a taught term's token left out, so the change is held off all that the training audio
    and its other words use (the recipe's pull, `hold_weight`, in the weights' terms, with
    no second forward pass); "both": the mean of the two.
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
    Collator,
    Hooks,
    Labeller,
    base_logits,
    divergence,
    is_multilingual,
    spans,
)
from whisper_ft.vocabulary import absent_from, as_hotwords

CHANGE_MOMENTS = ("general", "training", "both")


@dataclass(frozen=True)
class Research:
    prompt_fraction: float = 0.0  # share of examples trained reading the vocabulary prompt
    absent_prompt_fraction: float = 0.5  # share of those whose prompt leaves out their words
    distill_weight: float = 0.0  # weight of the pull toward the base model (self-distillation)
    known_labels: bool = True  # train on label tokens the base model already gets right too
    encoder_weight: float = 0.0  # weight of the pull of the encoder's output toward the base's
    replay_cross_entropy: bool = True  # False: examples without a taught term are only held
    spec_augment: int = 0  # frequency bands and time stretches masked in each example
    general_change_weight: float = 0.0  # weight of the layers' output change on general speech
    change_moments: str = "general"  # what that change is measured on (CHANGE_MOMENTS)

    def __post_init__(self):
        if self.change_moments not in CHANGE_MOMENTS:
            raise ValueError(f"change_moments: choose one of {', '.join(CHANGE_MOMENTS)}")

    def hooks(
        self, term_ids: Sequence[Sequence[int]] = (), moments: dict | None = None, **given
    ) -> Hooks:
        """The run's hooks, with `given` ones (on_epoch); `term_ids`, the token sequences
        of the run's vocabulary (whisper_ft.finetune.term_token_ids); `moments`, the
        adapted layers' input moments on general speech (input_moments), for
        general_change_weight."""
        corrections = self.distill_weight > 0 or not self.known_labels
        held_only = not self.replay_cross_entropy
        changed = self.general_change_weight > 0
        if changed and not moments:
            raise ValueError("general_change_weight needs the layers' input moments")
        loss = None
        if corrections or self.encoder_weight > 0 or held_only or changed:

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
                if changed:
                    total = total + self.general_change_weight * general_change(model, moments)
                return total

        def prompt(example, vocabulary, labeller, rng):
            return training_prompt(example, vocabulary, labeller, self, rng)

        features = None
        if self.spec_augment > 0:

            def features(batch, frames, rng):
                return spec_augment(batch, frames, self.spec_augment, rng)

        return Hooks(loss=loss, prompt=prompt, features=features, **given)


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


@torch.no_grad()
def input_moments(
    model, processor, examples, modules: Sequence[str], term_ids: Sequence[Sequence[int]] = ()
) -> dict:
    """For each Linear of the (plain, base) `model` named like one of `modules`: the second
    moment E[x x^T] of its input over `examples` read with their transcripts (teacher
    forced, one at a time, so no padding is counted but the 30 s window's own), and the
    base output's energy tr(W K W^T); keyed by the module's name. The decoder's positions
    that predict a token of `term_ids` are left out."""
    labeller = Labeller(processor.tokenizer, "en", "transcribe", is_multilingual(model))
    collator = Collator(
        processor.feature_extractor,
        pad_token_id=model.config.pad_token_id,
        decoder_start_token_id=model.config.decoder_start_token_id,
    )
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    kept: list[torch.Tensor] = []  # the decoder positions counted in this example

    def record(name):
        def hook(module, args):
            x = args[0]
            if name.startswith("model.decoder") and x.shape[-2] == kept[0].shape[-1]:
                x = x[kept[0]]
            x = x.reshape(-1, x.shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]

        return hook

    linears = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in modules
    }
    handles = [m.register_forward_pre_hook(record(n)) for n, m in linears.items()]
    try:
        model.eval()
        for e in examples:
            inputs = collator([e.audio], [labeller.labels(e, timestamps=False)])
            labels = inputs["labels"]  # the model feeds them shifted right
            kept[:] = [(labels != -100) & ~spans(labels, term_ids)]
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    moments = {}
    for name, m in linears.items():
        k = (sums[name] / counts[name]).float()
        w = m.weight.detach().float()
        moments[name] = (k, float(((w @ k) * w).sum()))
    return moments


def mean_moments(a: dict, b: dict) -> dict:
    """The moments of two sets of speech, each counted as half (energies are linear in K)."""
    return {name: ((a[name][0] + b[name][0]) / 2, (a[name][1] + b[name][1]) / 2) for name in a}


def general_change(model, moments: dict) -> torch.Tensor:
    """The adapted layers' output change on general speech, each over its base output's
    energy: tr(dW K dW^T) / tr(W K W^T) with dW = scaling * B A, averaged over the layers."""
    total, layers = 0.0, 0
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not lora_a or "default" not in lora_a:
            continue
        k, energy = moments[name.removeprefix("base_model.model.")]
        a, b = lora_a["default"].weight, module.lora_B["default"].weight
        scaling = module.scaling["default"]
        inner = (a @ k.to(a.dtype)) @ a.T  # r x r
        total = total + scaling**2 * (inner * (b.T @ b)).sum() / energy
        layers += 1
    return total / max(1, layers)


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
