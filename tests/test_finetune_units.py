"""Unit tests of the training pieces that must be right by construction: labels, collator, WER."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from whisper_ft.dataset import Example
from whisper_ft.finetune import (
    LORA_MODULES,
    Collator,
    Labeller,
    LoraSettings,
    TrainSettings,
    fit_recipe,
)
from whisper_ft.subtitles import Cue
from whisper_ft.wer import word_error_rate

SOT, EOT = 50257, 50256  # tiny.en: <|startoftranscript|>, <|endoftext|> (= pad)


@pytest.fixture(scope="module")
def processor():
    from transformers import WhisperProcessor

    from whisper_ft.weights import hf_model

    return WhisperProcessor.from_pretrained(hf_model("tiny.en"))


def example(text="hello world", cues=()) -> Example:
    return Example(np.zeros(16000, np.float32), text, tuple(cues), "a.wav", 0.0)


def test_plain_labels(processor):
    labeller = Labeller(processor.tokenizer, "en", "transcribe", multilingual=False)
    ids = labeller.labels(example("Hello world."), timestamps=False)
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:2] == ["<|startoftranscript|>", "<|notimestamps|>"]
    assert tokens[-1] == "<|endoftext|>"
    assert processor.tokenizer.decode(ids, skip_special_tokens=True).strip() == "Hello world."


def test_timestamp_labels(processor):
    labeller = Labeller(processor.tokenizer, "en", "transcribe", multilingual=False)
    cues = [Cue(0.0, 1.5, "Hello"), Cue(1.52, 3.0, "world.")]
    ids = labeller.labels(example("Hello world.", cues), timestamps=True)
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|startoftranscript|>" and "<|notimestamps|>" not in tokens
    stamps = [t for t in tokens if t.startswith("<|") and t[2].isdigit()]
    assert stamps == ["<|0.00|>", "<|1.50|>", "<|1.52|>", "<|3.00|>"]
    assert tokens[-1] == "<|endoftext|>"


def test_multilingual_prefix(processor):
    labeller = Labeller(processor.tokenizer, "en", "transcribe", multilingual=True)
    ids = labeller.labels(example(), timestamps=False)
    assert processor.tokenizer.convert_ids_to_tokens(ids)[:4] == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]


def test_collator_masks_padding_by_attention_not_by_value(processor):
    collator = Collator(processor.feature_extractor, pad_token_id=EOT, decoder_start_token_id=SOT)
    short = [SOT, 50362, 11, EOT]
    long = [SOT, 50362, 11, 12, 13, EOT]
    batch = collator([np.zeros(16000, np.float32)] * 2, [short, long])
    labels = batch["labels"]
    # The start token is stripped (the model prepends it when shifting right) ...
    assert labels[1].tolist() == [50362, 11, 12, 13, EOT]
    # ... the real end-of-text token stays a target although it equals the pad token ...
    assert labels[0].tolist() == [50362, 11, EOT, -100, -100]
    # ... and only the padding is masked.
    assert (labels == -100).sum().item() == 2
    assert batch["input_features"].shape == (2, 80, 3000)


def test_collator_loss_counts_the_stop_token(processor):
    """A model trained with this collator learns to emit <|endoftext|>: its loss includes it."""
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.weights import hf_model

    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    collator = Collator(processor.feature_extractor, pad_token_id=EOT, decoder_start_token_id=SOT)
    batch = collator([np.zeros(16000, np.float32)], [[SOT, 50362, 11, EOT]])
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[1] == 3  # one prediction per label: <|notimestamps|>, ",", <|endoftext|>


def test_wer_normalises_case_and_punctuation():
    assert word_error_rate(["Hello, World!"], ["hello world"], "en") == 0.0
    assert word_error_rate(["the cat sat down"], ["the cat sat"], "en") == 25.0
    assert word_error_rate(["Bonjour à tous"], ["bonjour a tous"], "fr") == pytest.approx(
        33.33, 0.01
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TrainSettings(learning_rate=0), "learning_rate"),
        (TrainSettings(task="summarise"), "task"),
        (TrainSettings(batch_size=0), "batch_size"),
        (TrainSettings(timestamp_fraction=2), "timestamp_fraction"),
    ],
)
def test_train_settings_validate(settings, message):
    with pytest.raises(ValueError, match=message):
        settings.validate()


def test_the_inputs_left_empty_follow_whether_the_data_teaches_new_words():
    tiny, base = 4, 6  # encoder layers
    taught = fit_recipe(TrainSettings(), LoraSettings(), ["Klombrix"], tiny)
    assert taught[1].target_modules == LORA_MODULES
    assert (taught[0].learning_rate, taught[0].change_weight) == (1e-3, 1000.0)
    held = fit_recipe(TrainSettings(), LoraSettings(), [], tiny)
    assert held[1].target_modules == ("q_proj", "v_proj")
    assert (held[0].learning_rate, held[0].change_weight) == (5e-4, 0.0)
    # The layers follow the model's size as well: tiny taught new words leaves the lower
    # half of its encoder alone and keeps 0.9 of the upper half's change; larger models,
    # and runs with no new words, adapt all and keep all of it.
    assert (taught[1].layers, taught[1].encoder_scale) == ("upper", 0.9)
    assert (held[1].layers, held[1].encoder_scale) == ("all", 1.0)
    for words in (["Klombrix"], []):
        larger = fit_recipe(TrainSettings(), LoraSettings(), words, base)[1]
        assert (larger.layers, larger.encoder_scale) == ("all", 1.0)
    # What a user gives is kept, a 0 included; only the empty inputs are chosen.
    given = TrainSettings(learning_rate=2e-4, change_weight=0.0)
    lora = LoraSettings(target_modules=("fc1",), rank=8, layers="all", encoder_scale=0.0)
    mine = fit_recipe(given, lora, ["Klombrix"], tiny)
    assert (mine[0].learning_rate, mine[0].change_weight) == (2e-4, 0.0)
    assert mine[1].target_modules == ("fc1",) and mine[1].rank == 8
    assert (mine[1].layers, mine[1].encoder_scale) == ("all", 0.0)
    assert mine[0].hold_weight == given.hold_weight and mine[0].seed == given.seed


def test_lora_settings_reject_unknown_modules():
    with pytest.raises(ValueError, match="target_modules: qkv"):
        LoraSettings(target_modules=("qkv",)).validate()


def test_lora_layer_sets():
    import re

    from transformers import WhisperForConditionalGeneration

    from whisper_ft.weights import hf_model

    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))

    def adapted(**settings) -> set[str]:
        pattern = LoraSettings(**{"target_modules": ("q_proj", "v_proj"), **settings}).peft_targets(
            len(model.model.encoder.layers)
        )
        if isinstance(pattern, list):
            return {n for n, _ in model.named_modules() if n.split(".")[-1] in pattern}
        return {n for n, _ in model.named_modules() if re.fullmatch(pattern, n)}

    def kinds(names: set[str]) -> set[str]:  # "encoder.self_attn.q_proj" without layer numbers
        return {".".join([n.split(".")[1], *n.split(".")[4:]]) for n in names}

    # "acoustic": the encoder and the decoder's cross-attention, not its language model.
    assert kinds(adapted(layers="acoustic")) == {
        "encoder.self_attn.q_proj",
        "encoder.self_attn.v_proj",
        "decoder.encoder_attn.q_proj",
        "decoder.encoder_attn.v_proj",
    }
    assert len(adapted(layers="acoustic")) == 4 * 2 + 4 * 2  # 4 encoder, 4 decoder layers
    decoder = adapted(layers="decoder")
    assert len(decoder) == 4 * 2 * 2 and all(n.startswith("model.decoder.") for n in decoder)
    assert kinds(adapted(layers="encoder", target_modules=("fc1",))) == {"encoder.fc1"}
    assert kinds(adapted(layers="acoustic", target_modules=("fc2",))) == {"encoder.fc2"}
    assert len(adapted(layers="all")) == 4 * 2 + 4 * 2 * 2
    every = adapted(layers="all", target_modules=LORA_MODULES)  # every projection of both
    assert len(every) == 4 * 6 + 4 * 10
    # "upper": all of the decoder, the upper half of the encoder (tiny.en's layers 2 and 3).
    upper = adapted(layers="upper", target_modules=LORA_MODULES)
    assert {n for n in every if n.startswith("model.decoder.")} < upper
    assert {n.split(".")[3] for n in upper if n.startswith("model.encoder.")} == {"2", "3"}
    assert len(upper) == 2 * 6 + 4 * 10
    with pytest.raises(ValueError, match="encoder layers"):
        LoraSettings(layers="upper").peft_targets()
    with pytest.raises(ValueError, match="fit_recipe"):  # the default, not yet chosen
        LoraSettings().peft_targets(4)


@pytest.fixture(scope="module")
def adapted(processor):
    """tiny.en with a fresh LoRA adapter (which starts as the identity), on a spoken clip."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    from tests.speech import espeak
    from whisper_ft.audio import load_audio
    from whisper_ft.weights import hf_model

    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        audio = load_audio(espeak("Please open the door.", Path(tmp) / "a.wav"))
    features = processor.feature_extractor(
        [audio], sampling_rate=16000, return_tensors="pt"
    ).input_features
    return model, features


@contextlib.contextmanager
def moved_adapter(model):
    """The adapter moved away from the identity (random lora_B) for a while, as training
    moves it; put back as it was after."""
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    saved = [p.detach().clone() for p in lora]
    try:
        with torch.no_grad():
            for p in lora:
                p.normal_(std=0.05)
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(lora, saved, strict=True):
                p.copy_(value)


def reader(processor, model):
    """The Collator and Labeller a run reads English examples with, plain text."""
    collator = Collator.for_model(processor, model)
    return collator, Labeller(processor.tokenizer, "en", "transcribe", multilingual=False)


def labels_batch(processor, text: str) -> torch.Tensor:
    ids = processor.tokenizer.convert_tokens_to_ids(["<|notimestamps|>"])
    ids += processor.tokenizer.encode(" " + text, add_special_tokens=False) + [EOT]
    return torch.tensor([ids])


def test_corrections_loss_trains_only_what_the_base_model_gets_wrong(processor, adapted):
    from bench.research import corrections_loss

    model, features = adapted
    spoken = labels_batch(processor, "Please open the door.")
    corrected = labels_batch(processor, "Please open the Zentrafy.")
    with torch.no_grad():
        for labels, must_learn in ((spoken, False), (corrected, True)):
            inputs = {"input_features": features, "labels": labels}
            output = model(**inputs)
            loss = corrections_loss(model, inputs, output.logits, 1.0, known_labels=False)
            full = corrections_loss(model, inputs, output.logits, 1.0, known_labels=True)
            if must_learn:
                assert loss > 0.5  # the new word costs; the rest is the base model's own
                assert full > loss  # plain cross-entropy also sharpens the known words
            else:
                assert loss == 0.0  # the base model already says it: nothing to change
                assert torch.isclose(full, output.loss, rtol=1e-3)  # = plain cross-entropy


def test_replay_without_cross_entropy_trains_only_the_rows_that_write_a_taught_term(processor):
    from bench.research import taught_rows_loss
    from whisper_ft.finetune import term_token_ids

    terms = term_token_ids(processor.tokenizer, ["Zentrafy"])
    taught = labels_batch(processor, "Please open the Zentrafy.")[0]
    general = labels_batch(processor, "We flew from Reykjavik to Winnipeg on a cold morning.")[0]
    width = max(len(taught), len(general))
    labels = torch.full((2, width), -100)
    labels[0, : len(taught)], labels[1, : len(general)] = taught, general
    logits = torch.randn(
        2, width, len(processor.tokenizer), generator=torch.Generator().manual_seed(0)
    )
    per_token = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )
    loss = taught_rows_loss({"labels": labels}, logits, terms)
    valid = (labels != -100).sum()
    assert torch.isclose(loss, per_token[0].sum() / valid)  # the general row costs nothing
    only_general = taught_rows_loss({"labels": labels[1:]}, logits[1:], terms)
    assert only_general == 0.0


def test_spec_augment_masks_bands_and_stretches_of_the_speech_and_leaves_the_padding():
    import random

    from bench.research import spec_augment

    features = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
    original, spoken = features.clone(), [300, 1200]
    masked = spec_augment(features, spoken, 2, random.Random(3))
    assert torch.equal(features, original)  # the input is not changed in place
    for row, frames in enumerate(spoken):
        assert torch.equal(masked[row, :, frames:], features[row, :, frames:])  # padding kept
        changed = masked[row, :, :frames] != features[row, :, :frames]
        mean = features[row, :, :frames].mean()
        assert torch.allclose(masked[row, :, :frames][changed], mean)  # set to the row's mean
        # Two bands of at most 12 channels and two stretches of at most 10% of the frames.
        assert 0 < changed.float().mean() <= 24 / 80 + 0.2
        bands = changed.all(dim=1).sum() + changed.all(dim=0).sum()
        assert bands > 0  # whole channels or whole frames: bands and stretches, not noise
    assert torch.equal(masked, spec_augment(features, spoken, 2, random.Random(3)))


def test_the_change_penalty_is_each_layers_output_change_on_the_speech_it_was_measured_on(
    processor, adapted
):
    from transformers import WhisperForConditionalGeneration

    from tests.speech import espeak
    from whisper_ft.audio import load_audio
    from whisper_ft.finetune import change_penalty, held_layers, input_moments
    from whisper_ft.weights import hf_model

    model, _ = adapted
    plain = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    text = "We walked home along the river after dinner."
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Example(load_audio(espeak(text, Path(tmp) / "g.wav")), text, (), "g.wav", 0.0)
    inputs: dict[str, torch.Tensor] = {}  # each layer's input, recorded as it is measured
    handles = [
        m.register_forward_pre_hook(
            lambda _, args, name=name: inputs.__setitem__(name, args[0].reshape(-1, 384))
        )
        for name, m in plain.named_modules()
        if name.endswith(("q_proj", "v_proj"))
    ]
    moments = input_moments(plain, *reader(processor, plain), [spoken], ("q_proj", "v_proj"))
    for h in handles:
        h.remove()
    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()}
    layers = {n: m for n, m in layers.items() if n in moments}
    assert len(layers) == len(moments) == 4 * 2 + 4 * 2 * 2
    held = held_layers(model, moments)
    assert len(held) == len(layers)
    with torch.no_grad():
        assert change_penalty(held) < 1e-9  # a fresh adapter changes nothing
    with moved_adapter(model), torch.no_grad():
        measured = [
            (inputs[n] @ m.get_delta_weight("default").T).pow(2).sum()
            / (inputs[n] @ m.base_layer.weight.T).pow(2).sum()
            for n, m in layers.items()
        ]
        assert float(change_penalty(held)) == pytest.approx(
            float(sum(measured) / len(measured)), rel=1e-3
        )
        # A change confined to the directions this speech does not use costs nothing.
        saved = {n: m.lora_A["default"].weight.clone() for n, m in layers.items()}
        for n, m in layers.items():
            _, vectors = torch.linalg.eigh(moments[n][0].double())
            m.lora_A["default"].weight.copy_(vectors[:, :4].T)  # the 4 least used directions
        unused = change_penalty(held)
        for n, m in layers.items():
            m.lora_A["default"].weight.copy_(saved[n])
        assert unused < 1e-3 * sum(measured) / len(measured)


def test_the_encoder_held_alike_in_every_direction_or_not_at_all(processor, adapted):
    from transformers import WhisperForConditionalGeneration

    from bench.research import encoder_held
    from tests.speech import espeak
    from whisper_ft.audio import load_audio
    from whisper_ft.finetune import change_penalty, held_layers, input_moments
    from whisper_ft.weights import hf_model

    model, _ = adapted
    plain = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    text = "The library opens at nine on Saturdays."
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Example(load_audio(espeak(text, Path(tmp) / "g.wav")), text, (), "g.wav", 0.0)
    moments = input_moments(plain, *reader(processor, plain), [spoken], ("q_proj", "v_proj"))
    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()}
    encoder = [n for n in moments if n.startswith("model.encoder.")]
    assert len(encoder) == 4 * 2

    # Not held: only the decoder's layers pay for their change.
    unheld = encoder_held(moments, "none")
    assert unheld.keys() == moments.keys() and all(unheld[n] is None for n in encoder)
    assert {id(m) for m, _, _ in held_layers(model, unheld)} == {
        id(layers[n]) for n in moments if n not in encoder
    }
    # A layer the moments do not name is a mistake, not a layer left unheld.
    with pytest.raises(KeyError, match=encoder[0]):
        held_layers(model, {n: m for n, m in moments.items() if n != encoder[0]})
    # Held alike in every direction: a layer's cost is its whole change, times the mean
    # energy of a direction of its input, even where this speech has none (where the
    # measured moment lets the change go free).
    isotropic = encoder_held(moments, "isotropic")
    assert isotropic.keys() == moments.keys()
    stronger = encoder_held(moments, "measured", 4.0)  # the encoder's share, times 4
    for name, (k, energy) in moments.items():
        factor = 4.0 if name in encoder else 1.0
        assert torch.equal(stronger[name][0], k * factor) and stronger[name][1] == energy
    with moved_adapter(model), torch.no_grad():
        for name in encoder:
            k, energy = moments[name]
            lora_a = layers[name].lora_A["default"].weight
            saved = lora_a.clone()
            lora_a.copy_(torch.linalg.eigh(k.double())[1][:, :4].T)  # the 4 least used
            delta = layers[name].get_delta_weight("default")
            expected = float(torch.trace(k) / k.shape[0] * delta.pow(2).sum() / energy)
            alone = dict.fromkeys(moments)  # this layer held, no other
            alike = float(change_penalty(held_layers(model, alone | {name: isotropic[name]})))
            measured = float(change_penalty(held_layers(model, alone | {name: moments[name]})))
            lora_a.copy_(saved)
            assert alike == pytest.approx(expected, rel=1e-3)
            assert measured < 1e-3 * alike


def test_the_encoders_hold_as_the_recipes_changes_nothing_and_bad_values_say_what_to_give():
    from bench.research import Research

    assert Research().hooks().moments is None  # the recipe's own moments, draw for draw
    assert Research(encoder_hold=4.0).hooks().moments is not None
    with pytest.raises(ValueError, match="measured, isotropic, none"):
        Research(encoder_moments="both")
    with pytest.raises(ValueError, match="encoder_hold must be 0 or more"):
        Research(encoder_hold=-1.0)


def test_a_wide_inputs_moment_keeps_its_largest_directions_and_what_they_cost():
    from whisper_ft.finetune import MOMENT_DIRECTIONS, moment_factor

    generator = torch.Generator().manual_seed(0)
    width = MOMENT_DIRECTIONS + 512  # as tiny.en's fc2 input (1536)
    basis, _ = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.double))
    spectrum = torch.logspace(0, -8, width, dtype=torch.double)  # most energy in few directions
    k = (basis * spectrum) @ basis.T
    factor = moment_factor(k.float()).double()
    assert factor.shape == (width, MOMENT_DIRECTIONS)
    kept = basis[:, :MOMENT_DIRECTIONS]
    # Along the kept directions the factor gives K exactly; the rest it leaves out.
    assert torch.allclose(kept.T @ factor @ factor.T @ kept, kept.T @ k @ kept, atol=1e-6)
    left_out = basis[:, -1]
    assert float(left_out @ factor @ factor.T @ left_out) < 1e-6
    assert float(torch.trace(factor @ factor.T) / torch.trace(k)) > 0.999
    # A multiple of the identity has no largest directions: it keeps every one of them.
    alike = moment_factor(torch.eye(width) * 4.0)
    assert torch.equal(alike @ alike.T, torch.eye(width) * 4.0)


def test_moments_of_the_training_speech_leave_out_where_the_decoder_writes_a_taught_term(
    processor,
):
    from transformers import WhisperForConditionalGeneration

    from tests.speech import espeak
    from whisper_ft.audio import load_audio
    from whisper_ft.finetune import input_moments, spans, term_token_ids
    from whisper_ft.weights import hf_model

    plain = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    text = "Please open the Zentrafy before lunch."
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Example(load_audio(espeak(text, Path(tmp) / "t.wav")), text, (), "t.wav", 0.0)
    terms = term_token_ids(processor.tokenizer, ["Zentrafy"])
    inputs: dict[str, torch.Tensor] = {}
    names = ("model.decoder.layers.0.self_attn.q_proj", "model.encoder.layers.0.self_attn.q_proj")
    handles = [
        plain.get_submodule(n).register_forward_pre_hook(
            lambda _, args, name=n: inputs.__setitem__(name, args[0][0].double())
        )
        for n in names
    ]
    read = reader(processor, plain)
    every = input_moments(plain, *read, [spoken], ("q_proj",))
    for h in handles:
        h.remove()
    held = input_moments(plain, *read, [spoken], ("q_proj",), terms)
    decoder, encoder = names
    labels = labels_batch(processor, text)
    writes_term = spans(labels, terms)[0]
    assert 0 < writes_term.sum() < len(writes_term)
    assert inputs[decoder].shape[0] == len(writes_term)  # one decoder position per label

    def moment(x):
        return (x.T @ x / x.shape[0]).float()

    assert torch.allclose(every[decoder][0], moment(inputs[decoder]), atol=1e-5)
    assert torch.allclose(held[decoder][0], moment(inputs[decoder][~writes_term]), atol=1e-5)
    assert not torch.allclose(held[decoder][0], every[decoder][0], atol=1e-3)
    # The audio is all counted: the encoder hears the term as it hears everything else.
    assert torch.allclose(held[encoder][0], every[encoder][0])

    # Only the layers LoRA adapts are measured (`upper`: tiny.en's encoder layers 2 and 3
    # and its decoder), each as it is measured alone; layers that read the same input share
    # its moment (q, k and v; the decoder's cross-attention k and v read the encoder output).
    upper = LoraSettings(layers="upper", target_modules=LORA_MODULES).peft_targets(4)
    some = input_moments(plain, *read, [spoken], upper, terms)
    assert {n.split(".")[3] for n in some if n.startswith("model.encoder.")} == {"2", "3"}
    assert len(some) == 2 * 6 + 4 * 10
    alone = input_moments(plain, *read, [spoken], ("fc2",), terms)
    for name in ("model.encoder.layers.3.fc2", "model.decoder.layers.1.fc2"):
        assert torch.equal(some[name][0], alone[name][0]), name
    layer = "model.encoder.layers.2.self_attn."
    assert torch.equal(some[layer + "q_proj"][0], some[layer + "v_proj"][0])
    assert some[layer + "q_proj"][1] != some[layer + "v_proj"][1]  # their own weights' energy
    cross = [some[f"model.decoder.layers.{i}.encoder_attn.k_proj"][0] for i in range(4)]
    assert all(torch.equal(k, cross[0]) for k in cross)
    assert not torch.allclose(cross[0], some["model.decoder.layers.0.encoder_attn.q_proj"][0])


def test_the_hold_pulls_everything_but_the_taught_terms_toward_the_base_model(processor, adapted):
    from whisper_ft.finetune import hold_loss, spans, term_token_ids

    model, features = adapted
    terms = term_token_ids(processor.tokenizer, ["Zentrafy"])
    corrected = labels_batch(processor, "Please open the Zentrafy.")
    assert processor.tokenizer.decode(corrected[0][spans(corrected, terms)[0]]) == " Zentrafy"
    inputs = {"input_features": features, "labels": corrected}
    with torch.no_grad():  # a fresh adapter is the identity: nothing has moved yet
        assert hold_loss(model, inputs, model(**inputs).logits, terms) < 1e-6
    with moved_adapter(model), torch.no_grad():
        moved = model(**inputs).logits
        held = hold_loss(model, inputs, moved, terms)
        assert held > 0  # the words around the term have moved away from the base model's
        # The term's own tokens are free: moving only them costs nothing.
        only_term = model(**inputs).logits.clone()
        with model.disable_adapter():
            base = model(**inputs).logits
        outside = ~spans(corrected, terms)
        only_term[outside] = base[outside]
        assert hold_loss(model, inputs, only_term, terms) < 1e-6
        # Without taught terms every token is held, the term's too.
        assert hold_loss(model, inputs, moved, []) > held
        # Softened by a temperature, the pull still holds what moved and frees the term.
        assert hold_loss(model, inputs, moved, terms, temperature=2.0) > 0
        assert hold_loss(model, inputs, only_term, terms, temperature=2.0) < 1e-6


def test_the_pulls_base_model_encodes_each_example_once_and_reads_as_before(processor, adapted):
    from whisper_ft.finetune import EncodedOnce, base_logits, hold_loss, term_token_ids

    model, features = adapted
    two = torch.cat([features, features.flip(-1)])  # two examples: the clip, and reversed
    labels = torch.cat([labels_batch(processor, "Please open the Zentrafy.")] * 2)
    inputs = {"input_features": two, "labels": labels}
    terms = term_token_ids(processor.tokenizer, ["Zentrafy"])
    heard = [(0, 16000), (1, 16000)]
    with moved_adapter(model), torch.no_grad():
        kept = EncodedOnce()
        _, encoded = kept(model, two, heard)
        # The base model's reading, its encoder output given: as it reads the audio itself.
        assert torch.allclose(base_logits(model, inputs, encoded), base_logits(model, inputs))
        moved = model(**inputs).logits
        assert torch.isclose(
            hold_loss(model, inputs, moved, terms, encoded), hold_loss(model, inputs, moved, terms)
        )
        # Kept: the same examples as heard again are not encoded again (other features
        # would read otherwise); a row not heard before is, from its own features.
        zeros = torch.zeros_like(two)
        _, again = kept(model, zeros, heard)
        assert torch.equal(again, encoded) and len(kept.kept) == 2
        _, other = kept(model, zeros, [(0, 16000), (0, 13913)])
        assert torch.equal(other[0], encoded[0])
        assert torch.allclose(other[1], EncodedOnce(limit=0)(model, zeros[:1], ["new"])[1][0])
        assert not torch.allclose(other[1], encoded[1]) and len(kept.kept) == 3
        # Past its limit nothing is kept, and the outputs are as right.
        none = EncodedOnce(limit=0)
        assert torch.allclose(none(model, two, heard)[1], encoded) and not none.kept
        assert none.kept_bytes == 0 and kept.kept_bytes == 3 * 2 * encoded[0].nbytes


def test_the_frozen_lower_encoder_runs_once_and_trains_as_the_whole_model(processor):
    """With the lower half of tiny.en's encoder left as it was (`upper`), the trained model
    reads each example's kept lower-layer output through its adapted layers alone: the same
    encoder output, loss and gradients as the whole model on the audio."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    from tests.speech import espeak
    from whisper_ft.audio import load_audio
    from whisper_ft.finetune import EncodedOnce, encoder_given, frozen_layers
    from whisper_ft.weights import hf_model

    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    targets = LoraSettings(layers="upper", target_modules=LORA_MODULES).peft_targets(4)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
    assert frozen_layers(model) == 2  # layers 0 and 1 have no adapter
    with tempfile.TemporaryDirectory() as tmp:
        audio = load_audio(espeak("Please open the door.", Path(tmp) / "a.wav"))
    features = processor.feature_extractor(
        [audio, audio[::-1].copy()], sampling_rate=16000, return_tensors="pt"
    ).input_features
    inputs = {
        "input_features": features,
        "labels": labels_batch(processor, "Open it.").repeat(2, 1),
    }
    kept = EncodedOnce(frozen=2, base=False)

    def trained(given: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        output = model(**given)
        output.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad(set_to_none=True)
        return output.loss.detach(), output.encoder_last_hidden_state.detach(), grads

    with moved_adapter(model):
        lower, base = kept(model, features, ["clip", "reversed"])
        assert base is None and len(kept.kept) == 2
        loss, encoded, grads = trained(inputs)
        cached_loss, cached_encoded, cached_grads = trained(encoder_given(model, inputs, lower, 2))
        assert torch.allclose(cached_encoded, encoded, atol=1e-4)
        assert torch.isclose(cached_loss, loss, atol=1e-5)
        assert grads.keys() == cached_grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(cached_grads[name], grad, rtol=1e-3, atol=1e-6), name
        encoder = [g for n, g in grads.items() if ".encoder.layers.2." in n and "lora_A" in n]
        assert encoder and all(g.abs().sum() > 0 for g in encoder)  # the adapted encoder learns
        # The adapter moved: the adapted layers' output is not the base model's.
        with model.disable_adapter(), torch.no_grad():
            assert not torch.allclose(model(**inputs).encoder_last_hidden_state, encoded, atol=1e-3)


def test_the_benchmark_scales_the_encoders_and_the_decoders_change_apart(processor, adapted):
    from bench.finetune import scaled

    model, features = adapted
    labels = labels_batch(processor, "Please open the door.")

    def encoded(m):
        return m.get_base_model().model.encoder(features).last_hidden_state

    with moved_adapter(model), torch.no_grad():
        with model.disable_adapter():
            base, base_logits = encoded(model), model(features, labels=labels).logits
        trained, trained_logits = encoded(model), model(features, labels=labels).logits
        assert not torch.allclose(trained, base, atol=1e-4)
        # The encoder's change dropped: the encoder reads as the base model's.
        decoder_only = scaled(model, 0.0, 1.0)
        assert torch.allclose(encoded(decoder_only), base, atol=1e-5)
        # The decoder's dropped: the encoder as trained, the decoder's adapters zero.
        encoder_only = scaled(model, 1.0, 0.0)
        assert torch.allclose(encoded(encoder_only), trained, atol=1e-5)
        both_dropped = scaled(model, 0.0, 0.0)(features, labels=labels).logits
        assert torch.allclose(both_dropped, base_logits, atol=1e-4)
        # The model scaled is a copy: the one trained is as it was.
        assert torch.allclose(model(features, labels=labels).logits, trained_logits)


def test_the_benchmarks_soup_is_the_mean_of_the_trainings_changes(processor, adapted):
    import copy

    from bench.finetune import scaled, soup
    from whisper_ft.archive import merge

    model, features = adapted
    labels = labels_batch(processor, "Please open the door.")
    with moved_adapter(model), torch.no_grad():
        trained = merge(copy.deepcopy(model))
        untrained = merge(scaled(model, 0.0, 0.0))
        halfway = merge(scaled(model, 0.5, 0.5))
        mixed = soup([trained, untrained])
        # The mean of a change and none is half the change (a merge is linear in lora_B).
        assert torch.allclose(
            mixed(features, labels=labels).logits,
            halfway(features, labels=labels).logits,
            atol=1e-4,
        )
        assert not torch.allclose(
            mixed(features, labels=labels).logits,
            trained(features, labels=labels).logits,
            atol=1e-3,
        )
        # Whisper's output layer is its token embedding: it stays one tensor in the soup.
        assert mixed.proj_out.weight is mixed.model.decoder.embed_tokens.weight


def test_the_benchmark_lists_the_clips_read_worse_after_training():
    from bench.finetune import printable, read_worse

    real = [
        ("a.wav", "add apples to my shopping list"),
        ("b.wav", "is the garage door open"),
        ("c.wav", "set the light to fifty percent"),
    ]
    before = {
        "real_readings": [
            "Add apples to my chocolate list.",
            "Is the garage door open?",
            "Set the light to 50%.",
        ]
    }
    # Case and punctuation are not errors; a changed word is.
    after = {
        "real_readings": [
            "And apples to my chocolate list.",
            "is the garage door open",
            "set the light to 50%!",
        ]
    }
    worse = read_worse(real, before, after)
    assert worse == [
        {
            "reference": "add apples to my shopping list",
            "before": "Add apples to my chocolate list.",
            "after": "And apples to my chocolate list.",
        }
    ]
    assert read_worse(real, after, before) == []  # fewer errors is not worse
    assert "real_readings" not in printable(before)


def test_best_epoch_weighs_general_speech_forgetting():
    from whisper_ft.finetune import TrainReport, epoch_score

    report = TrainReport("en", 10, 2, general_wer_before=10.0)
    sharper = {"epoch": 2, "wer": 4.0, "general_wer": 14.0}  # 4 points better, 4 worse
    gentler = {"epoch": 1, "wer": 5.0, "general_wer": 10.5}
    assert epoch_score(gentler, report) < epoch_score(sharper, report)
    plain = TrainReport("en", 10, 0)
    assert epoch_score({"epoch": 3}, plain) < epoch_score({"epoch": 2}, plain)


def test_the_latest_epoch_within_noise_of_the_best_is_kept():
    from whisper_ft.finetune import TrainReport, keeps

    report = TrainReport("en", 10, 1)
    words = {"wer": 30}  # one validation window: a word is 3.3 points
    first = {"epoch": 1, "wer": 10.0}  # 3 words wrong
    history = [first, {"epoch": 2, "wer": 100 * 5 / 30}]
    assert keeps(history[-1], history, report, words)  # 5 wrong: not told apart from 3
    history.append({"epoch": 3, "wer": 40.0})  # 12 wrong: worse
    assert not keeps(history[-1], history, report, words)
    history.append({"epoch": 4, "wer": 0.0})  # a new best is always kept
    assert keeps(history[-1], history, report, words)

    # With general speech of 1000 words, a rise of 2 points (20 words) is measurable.
    general = TrainReport("en", 10, 1, general_wer_before=8.0)
    words = {"wer": 30, "general_wer": 1000}
    history = [{"epoch": 1, "wer": 10.0, "general_wer": 8.0}]
    history.append({"epoch": 2, "wer": 10.0, "general_wer": 10.0})
    assert not keeps(history[-1], history, general, words)
    history.append({"epoch": 3, "wer": 10.0, "general_wer": 8.5})
    assert keeps(history[-1], history, general, words)
    # Without validation the last epoch is kept.
    plain = TrainReport("en", 10, 0)
    history = [{"epoch": 1}, {"epoch": 2}]
    assert keeps(history[-1], history, plain, {})


def test_worse_general_speech_is_a_clear_warning(caplog):
    from whisper_ft.finetune import TrainReport, warn_if_worse

    report = TrainReport(
        "en",
        10,
        2,
        wer_before=20.0,
        wer_after=2.0,
        best_epoch=4,
        general_wer_before=8.0,
        general_wer_after=9.5,
    )
    with caplog.at_level("INFO", logger="whisper_ft.finetune"):
        warn_if_worse(report)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "general speech WER got WORSE: 8.00% -> 9.50% (epoch 4 kept). The model may have "
        "forgotten some general speech: try a lower learning_rate or fewer epochs, add more "
        "(or more varied) training audio"
    ]
    assert "validation WER 20.00% -> 2.00% (epoch 4 kept)" in caplog.text


def test_speed_perturbation_scales_audio_and_cue_times_together():
    import random

    from whisper_ft.finetune import perturb_speed

    audio = np.sin(np.arange(160000) / 10).astype(np.float32)  # 10 s
    window = Example(audio, "a b", (Cue(1.0, 4.0, "a"), Cue(5.0, 9.5, "b")), "a.wav", 0.0)
    seen = set()
    rng = random.Random(0)
    for _ in range(30):
        played = perturb_speed(window, 0.1, rng)
        factor = round(window.audio.size / played.audio.size, 2)
        seen.add(factor)
        for cue, original in zip(played.cues, window.cues, strict=True):
            assert cue.start == pytest.approx(original.start / factor, abs=0.01)
            assert cue.end == pytest.approx(original.end / factor, abs=0.01)
            assert cue.text == original.text
    assert seen == {0.9, 1.0, 1.1}
    long = Example(np.zeros(29 * 16000, np.float32), "a", (), "a.wav", 0.0)
    assert all(perturb_speed(long, 0.1, rng).audio.size <= 30 * 16000 for _ in range(20))
    assert perturb_speed(window, 0.0, rng) is window


def test_cut_onset_cuts_only_audio_before_the_first_cue_and_moves_the_cues(tmp_path):
    import random

    from whisper_ft.dataset import AudioSpan
    from whisper_ft.finetune import cut_onset

    audio = np.arange(160000, dtype=np.float32)  # 10 s, each sample its own index
    window = Example(audio, "a b", (Cue(0.5, 4.0, "a"), Cue(5.0, 9.5, "b")), "a.wav", 0.0)
    rng = random.Random(0)
    cuts = []
    for _ in range(40):
        cut_window, cut = cut_onset(window, rng)
        cuts.append(cut)
        assert 0 <= cut <= 0.5 * 16000  # never into the first cue's speech
        assert cut_window.audio[0] == cut and cut_window.audio.size == audio.size - cut
        for cue, original in zip(cut_window.cues, window.cues, strict=True):
            assert cue.start == pytest.approx(original.start - cut / 16000, abs=1e-6)
            assert cue.end == pytest.approx(original.end - cut / 16000, abs=1e-6)
            assert cue.text == original.text
    assert min(cuts) < 0.1 * 16000 and max(cuts) > 0.4 * 16000  # from none to nearly all
    at_zero = Example(audio, "a", (Cue(0.0, 4.0, "a"),), "a.wav", 0.0)
    assert cut_onset(at_zero, rng) == (at_zero, 0)
    clip = Example(audio, "a", (), "a.wav", 0.0)  # a .txt clip: no times, nothing cut
    assert cut_onset(clip, rng) == (clip, 0)
    audio.tofile(tmp_path / "samples.f32")  # a recording's decoded samples, left on disk
    on_disk = Example(AudioSpan(tmp_path / "samples.f32", 0, audio.size), "a", window.cues, "a", 0)
    cut_span, cut = cut_onset(on_disk, random.Random(1))
    assert isinstance(cut_span.audio, AudioSpan) and cut > 0
    assert np.array_equal(np.asarray(cut_span.audio), audio[cut:])


def test_whole_windows_are_trained_beside_their_sentences():
    from whisper_ft.finetune import TrainSettings, examples_of

    audio = np.zeros(160000, np.float32)
    window = Example(audio, "a b", (Cue(1.0, 4.0, "a"), Cue(5.0, 9.5, "b")), "a.wav", 0.0)
    single = Example(audio, "a", (Cue(1.0, 4.0, "a"),), "a.wav", 0.0)
    plain = examples_of(window, TrainSettings())
    assert [e.text for e in plain] == ["a", "b"]
    both = examples_of(window, TrainSettings(whole_windows=True))
    assert [e.text for e in both] == ["a", "b", "a b"] and both[-1] is window
    assert len(examples_of(single, TrainSettings(whole_windows=True))) == 1  # not twice
    assert examples_of(window, TrainSettings(sentences=False)) == [window]


def test_prompted_labels_read_the_prompt_and_learn_only_the_transcript(processor):
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.weights import hf_model

    labeller = Labeller(processor.tokenizer, "en", "transcribe", multilingual=False)
    prompt = labeller.prompt_ids("Zentrafy, Klombrix")
    plain = labeller.labels(example("open Zentrafy"), False)
    prompted = labeller.labels(example("open Zentrafy"), False, prompt)
    assert prompted == prompt + plain and prompt[0] == 50360  # <|startofprev|>
    collator = Collator(processor.feature_extractor, pad_token_id=EOT, decoder_start_token_id=SOT)
    audio = [np.zeros(16000, np.float32)] * 2
    batch = collator(audio, [prompted, prompt + labeller.labels(example("hi"), False)])
    assert batch["decoder_input_ids"].shape == batch["labels"].shape
    inputs, labels = batch["decoder_input_ids"], batch["labels"]
    assert inputs[0].tolist() == prompted[:-1]  # reads the prompt, then its own tokens
    targets = [t for t in labels[0].tolist() if t != -100]
    assert targets == plain[1:]  # learns <|notimestamps|>, the text and <|endoftext|> only
    hi = labeller.labels(example("hi"), False)
    assert [t for t in labels[1].tolist() if t != -100] == hi[1:]  # prompt and padding masked
    # The same targets, whatever precedes them: the loss sees exactly the transcript tokens.
    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    with torch.no_grad():
        assert model(**batch).logits.shape[1] == len(prompted) - 1


def test_training_prompts_include_negative_examples(processor):
    """With absent_prompt_fraction, some windows read a prompt of only the words they do not
    say, so the model learns that a prompt word is no proof it was spoken."""
    import random

    from bench.research import Research, training_prompt

    labeller = Labeller(processor.tokenizer, "en", "transcribe", multilingual=False)
    vocabulary = ["Zentrafy", "Klombrix", "Mixtral"]
    window = example("We moved the whole team to Zentrafy.")

    def prompts(**settings):
        rng = random.Random(0)
        chosen = [
            training_prompt(window, vocabulary, labeller, Research(**settings), rng)
            for _ in range(200)
        ]
        return [processor.tokenizer.decode(p[1:]).strip() if p else "" for p in chosen]

    # The default reads no prompt (the weights learn the words); with prompt_fraction=1
    # every window reads one, about half of them without the words it says.
    assert set(prompts()) == {""}
    prompted = prompts(prompt_fraction=1.0)
    assert set(prompted) == {"Zentrafy, Klombrix, Mixtral", "Klombrix, Mixtral"}
    assert 70 < prompted.count("Klombrix, Mixtral") < 130
    assert set(prompts(prompt_fraction=1.0, absent_prompt_fraction=0.0)) == {
        "Zentrafy, Klombrix, Mixtral"
    }
    assert set(prompts(prompt_fraction=1.0, absent_prompt_fraction=1.0)) == {"Klombrix, Mixtral"}
    mixed = prompts(prompt_fraction=0.5, absent_prompt_fraction=0.5)
    assert set(mixed) == {"", "Klombrix, Mixtral", "Zentrafy, Klombrix, Mixtral"}
    assert 70 < mixed.count("") < 130  # about half unprompted
