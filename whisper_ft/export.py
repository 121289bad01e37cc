"""Merge a trained LoRA adapter into Whisper and pack it for serving.

The merged model is saved in Hugging Face form (safetensors + processor files), converted
once to CTranslate2 (float16) so that every request is served fast, and packed with a
manifest into one weights archive that the predictor loads as COG_WEIGHTS.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from whisper_ft import archive
from whisper_ft.weights import hf_to_ct2

logger = logging.getLogger(__name__)

PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
    "preprocessor_config.json",
    "generation_config.json",
)
LIBRARIES = ("torch", "transformers", "peft", "ctranslate2", "faster-whisper")


def merge(peft_model):
    """Fold the LoRA weights into the base weights; returns a plain Whisper model."""
    return peft_model.merge_and_unload()


def write_models(merged, processor, base_dir: Path, root: Path) -> Path:
    """Save a merged model under `root` as hf/ (transformers) and ct2/ (what serves);
    returns the ct2 folder."""
    merged.to("cpu").save_pretrained(root / "hf", safe_serialization=True)
    processor.save_pretrained(root / "hf")
    for name in PROCESSOR_FILES:  # keep the base model's own files where it has them
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, root / "hf" / name)
    (root / "ct2").mkdir()
    hf_to_ct2(root / "hf", root / "ct2")
    return root / "ct2"


def export(
    peft_model,
    processor,
    base_dir: Path,
    archive_path: Path,
    manifest: dict,
    *,
    save_adapter: bool = False,
) -> Path:
    """Write the weights archive; returns its path. Nothing is left at `archive_path` unless
    the whole archive was written."""
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        root = Path(tmp)
        if save_adapter:
            peft_model.save_pretrained(root / "adapter")
        write_models(merge(peft_model), processor, base_dir, root)
        full = {
            "format": archive.FORMAT,
            **manifest,
            "architecture": archive.architecture(root / "hf"),
            "versions": {name: version(name) for name in LIBRARIES},
        }
        (root / "manifest.json").write_text(json.dumps(full, indent=2, default=_jsonable) + "\n")
        archive.pack(root, archive_path)
    logger.info("weights archive written: %s", archive_path)
    return archive_path


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to the manifest")
