"""A model with large-v3-turbo's shape goes through the whole product, without the network.

large-v3 and large-v3-turbo differ from the embedded base and tiny.en where the code could
assume: 128 mel bins, not 80, and a vocabulary of 51866 tokens (a 100th language, <|yue|>,
moves every task and timestamp token up by one). A randomly initialised Whisper with that
input and vocabulary (its tokenizer and generation config built from base's, as large-v3's
are) and a few small layers is trained through the command line, merged, converted to
CTranslate2, served by the Predictor with word timestamps, and its two exported forms are
checked to agree. Random weights say nothing of accuracy: what is checked is that every
stage reads the shape and the token layout right.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests import vocab

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
YUE = 50358  # large-v3's new language token; base's tokens from here on move up by one
LARGE_V3_VOCAB = 51866


def shifted(token_id: int) -> int:
    return token_id + 1 if token_id >= YUE else token_id


def large_v3_turbo_shaped(base_hf: Path, out: Path) -> Path:
    """A random Whisper with large-v3-turbo's input (128 mel bins), vocabulary, tokenizer and
    generation config, and two small encoder and decoder layers."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    out.mkdir(parents=True)
    tokenizer = json.loads((base_hf / "tokenizer.json").read_text())
    added = tokenizer["added_tokens"]
    for token in added:
        token["id"] = shifted(token["id"])
    at = next(i for i, t in enumerate(added) if t["id"] > YUE)
    added.insert(at, {**added[at], "id": YUE, "content": "<|yue|>"})
    for special in tokenizer["post_processor"]["special_tokens"].values():
        special["ids"] = [shifted(i) for i in special["ids"]]
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))

    config = json.loads((base_hf / "tokenizer_config.json").read_text())
    specials = config["extra_special_tokens"]
    specials.insert(specials.index("<|su|>") + 1, "<|yue|>")
    (out / "tokenizer_config.json").write_text(json.dumps(config))

    features = json.loads((base_hf / "preprocessor_config.json").read_text())
    (out / "preprocessor_config.json").write_text(json.dumps({**features, "feature_size": 128}))

    generation = json.loads((base_hf / "generation_config.json").read_text())
    generation["lang_to_id"] = {
        **{k: shifted(v) for k, v in generation["lang_to_id"].items()},
        "<|yue|>": YUE,
    }
    generation["task_to_id"] = {k: shifted(v) for k, v in generation["task_to_id"].items()}
    for key in ("no_timestamps_token_id", "prev_sot_token_id"):
        generation[key] = shifted(generation[key])
    generation["suppress_tokens"] = [shifted(i) for i in generation["suppress_tokens"]]
    generation["alignment_heads"] = [[1, 0], [1, 1]]
    (out / "generation_config.json").write_text(json.dumps(generation))

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(
        WhisperConfig(
            vocab_size=LARGE_V3_VOCAB,
            num_mel_bins=128,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            decoder_start_token_id=50258,
            pad_token_id=50257,
            bos_token_id=50257,
            eos_token_id=50257,
            suppress_tokens=generation["suppress_tokens"],
            begin_suppress_tokens=generation["begin_suppress_tokens"],
        )
    )
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps(generation))  # ours, not the default
    return out


@pytest.fixture(scope="module")
def shaped(tmp_path_factory) -> Path:
    from whisper_ft.weights import hf_model

    return large_v3_turbo_shaped(hf_model("base"), tmp_path_factory.mktemp("large") / "hf")


@pytest.fixture(scope="module")
def trained(shaped, tmp_path_factory) -> Path:
    """Trained a few steps through the command line, as a user trains a hub model."""
    folder = tmp_path_factory.mktemp("large-train")
    data = vocab.training_zip(folder / "data", voices=vocab.TRAIN_VOICES[:1])
    inputs = [f"train_data=@{data}", f"base_model={shaped}", "language=en", "max_steps=3"]
    inputs += ["batch_size=4", "learn_vocabulary=false"]
    run = subprocess.run(
        [sys.executable, "-m", "whisper_ft", "train", *(x for i in inputs for x in ("-i", i))]
        + ["-o", str(folder / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    unpacked = folder / "unpacked"
    with tarfile.open(json.loads(run.stdout)["weights"]) as tar:
        tar.extractall(unpacked, filter="data")
    return unpacked


def test_the_training_labels_use_large_v3_token_layout(shaped):
    from transformers import WhisperProcessor

    from whisper_ft.finetune import Labeller

    processor = WhisperProcessor.from_pretrained(shaped)
    assert processor.feature_extractor.feature_size == 128
    labeller = Labeller(processor.tokenizer, "en", "transcribe", multilingual=True)
    # <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>, as large-v3 numbers them
    assert labeller.prefix_plain == [50258, 50259, 50360, 50364]
    assert processor.tokenizer.convert_tokens_to_ids("<|yue|>") == YUE
    assert labeller.timestamp_begin == 50365


def test_the_archive_keeps_the_large_shape(trained):
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["architecture"]["num_mel_bins"] == 128
    assert manifest["architecture"]["vocab_size"] == LARGE_V3_VOCAB
    served = json.loads((trained / "ct2" / "preprocessor_config.json").read_text())
    assert served["feature_size"] == 128
    config = json.loads((trained / "ct2" / "config.json").read_text())
    assert len(config["lang_ids"]) == 100 and YUE in config["lang_ids"]
    assert config["alignment_heads"] == [[1, 0], [1, 1]]


def test_both_exported_forms_read_the_audio_alike(trained, speech_wav):
    """The transformers folder and the CTranslate2 folder give the same language
    probabilities (all 100 languages) for the same 128-bin features."""
    import ctranslate2
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from whisper_ft.audio import load_audio

    processor = WhisperProcessor.from_pretrained(trained / "hf")
    features = processor.feature_extractor(
        [load_audio(speech_wav)], sampling_rate=16000, return_tensors="pt"
    ).input_features
    assert features.shape[1] == 128
    model = WhisperForConditionalGeneration.from_pretrained(trained / "hf")
    with torch.no_grad():
        encoded = model.model.encoder(features).last_hidden_state
        start = torch.tensor([[50258]])
        logits = model.model.decoder(input_ids=start, encoder_hidden_states=encoded)
        logits = model.proj_out(logits.last_hidden_state)[0, -1]
    languages = json.loads((trained / "ct2" / "config.json").read_text())["lang_ids"]
    expected = torch.softmax(logits[languages], -1).numpy()

    ct2 = ctranslate2.models.Whisper(str(trained / "ct2"), device="cpu", compute_type="float32")
    found = ct2.detect_language(ctranslate2.StorageView.from_array(features.numpy()))[0]
    tokenizer = processor.tokenizer
    got = dict(found)
    probabilities = np.array([got[tokenizer.convert_ids_to_tokens(i)] for i in languages])
    assert np.abs(probabilities - expected).max() < 2e-3


def test_the_predictor_serves_it_with_word_timestamps(trained, speech_wav, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "whisper_ft", "predict", "--weights", str(trained)]
        + ["-i", f"audio=@{speech_wav}", "-i", "language=en", "-i", "word_timestamps=true"]
        + ["-i", "temperature=0", "-o", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    output = json.loads(run.stdout)
    assert output["language"] == "en"
    previous = 0.0
    for segment in output["segments"]:
        for word in segment.get("words") or []:
            assert previous - 0.01 <= word["start"] <= word["end"] <= output["duration"] + 0.05
            previous = word["start"]
