"""Unit tests of the training pieces that must be right by construction: labels, collator, WER."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whisper_ft.dataset import Example
from whisper_ft.finetune import Collator, Labeller, LoraSettings, TrainSettings
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


def test_lora_settings_reject_unknown_modules():
    with pytest.raises(ValueError, match="target_modules: qkv"):
        LoraSettings(target_modules=("qkv",)).validate()


def test_lora_on_decoder_layers_only():
    import re

    from transformers import WhisperForConditionalGeneration

    from whisper_ft.weights import hf_model

    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny.en"))
    pattern = LoraSettings(layers="decoder").peft_targets()
    names = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
    assert len(names) == 4 * 2 * 2  # 4 decoder layers, self- and cross-attention, q and v
    assert all(n.startswith("model.decoder.") for n in names)
    assert LoraSettings().peft_targets() == ["q_proj", "v_proj"]
