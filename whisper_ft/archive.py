"""The trained weights archive: one tar that training returns and the predictor serves.

    weights.tar
      manifest.json        base model, settings, dataset size, WER before/after, versions
      hf/                  the merged model in Hugging Face form (safetensors + processor)
      ct2/                 the same model in CTranslate2 form (float16), for serving
      adapter/             the LoRA adapter alone (when asked for)

This module owns that format: `write_archive` merges a trained LoRA adapter into Whisper,
saves both forms, writes the `Manifest` and packs them; `open_archive` reads one back.

An archive is written under a temporary name and renamed when complete, so a run killed
mid-way never leaves one that looks finished. One that is read is checked before anything is
unpacked: regular files and folders only, no absolute paths, no `..`, bounded sizes; then it
is unpacked once into `weights/archives/<sha256>/` (see `cache`). A manifest is read leniently:
keys it does not know are ignored and the ones it lacks are None, so older archives still load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from whisper_ft import cache
from whisper_ft.cache import ModelError, prepared, sha256
from whisper_ft.convert import hf_to_ct2, is_ct2_dir, is_hf_dir
from whisper_ft.fetch import download

if TYPE_CHECKING:  # the training code (torch) is not imported to read a manifest
    from whisper_ft.finetune import LoraSettings, TrainSettings

logger = logging.getLogger(__name__)

FORMAT = "whisper-ft-weights/1"
MAX_ARCHIVE_BYTES = 20 * 1024**3  # the largest Whisper (large-v3) in both forms fits easily
MAX_MEMBERS = 1000
REQUIRED = ("manifest.json", "ct2/model.bin", "ct2/config.json", "hf/config.json")
# The shape of a Whisper model: a model trained from another base differs in these.
ARCHITECTURE_KEYS = ("d_model", "encoder_layers", "decoder_layers", "vocab_size", "num_mel_bins")
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


@dataclass(frozen=True)
class Manifest:
    """What an archive says about its model: manifest.json, its keys in this order.

    Training fills in what it knows; `write_archive` adds `architecture` and `versions`. Read
    back, `train` and `lora` are the settings' JSON (dicts), so that serving never imports the
    training code.
    """

    format: str = FORMAT
    base_model: str | None = None  # the spec trained from (base, tiny.en, a hub id, a URL)
    train: TrainSettings | dict | None = None
    lora: LoraSettings | dict | None = None
    dataset: dict | None = None  # recordings, windows, seconds, warnings
    language: str | None = None
    wer_before: float | None = None  # validation WER (%) of the base model
    wer_after: float | None = None  # ... and of the trained one
    general_data: dict | None = None  # the replayed everyday speech and its WER, if any
    vocabulary: list[str] | None = None  # the words taught (served as hotwords on request)
    best_epoch: int | None = None
    history: list[dict] | None = None  # one entry per epoch
    training_seconds: float | None = None
    architecture: dict | None = None  # ARCHITECTURE_KEYS of hf/config.json
    versions: dict | None = None  # of LIBRARIES, as installed when it was written

    def to_json(self) -> str:
        """The manifest.json text (settings written as their fields, tuples as lists)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps(fields, indent=2, default=_jsonable) + "\n"

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """A manifest from its parsed JSON; unknown keys are ignored, missing ones are None."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Archive:
    """An archive unpacked (once, cached by content): its folder and its manifest."""

    root: Path
    manifest: Manifest

    @property
    def hf(self) -> Path:
        return self.root / "hf"

    @property
    def ct2(self) -> Path:
        return self.root / "ct2"


# ---------------------------------------------------------------- writing


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


def write_archive(
    peft_model,
    processor,
    base_dir: Path,
    path: Path,
    manifest: Manifest,
    *,
    save_adapter: bool = False,
) -> Path:
    """Write the weights archive of a trained model; returns its path. Nothing is left at
    `path` unless the whole archive was written."""
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        root = Path(tmp)
        if save_adapter:
            peft_model.save_pretrained(root / "adapter")
        write_models(merge(peft_model), processor, base_dir, root)
        manifest = dataclasses.replace(
            manifest,
            format=FORMAT,
            architecture=architecture(root / "hf"),
            versions={name: version(name) for name in LIBRARIES},
        )
        (root / "manifest.json").write_text(manifest.to_json())
        pack(root, path)
    logger.info("weights archive written: %s", path)
    return path


def architecture(hf_dir: Path) -> dict:
    config = json.loads((hf_dir / "config.json").read_text())
    return {key: config.get(key) for key in ARCHITECTURE_KEYS}


def pack(root: Path, archive: Path) -> Path:
    """Tar the folders and files in `root` into `archive`, atomically."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.partial")
    with tarfile.open(tmp, "w") as tar:
        for item in sorted(root.iterdir()):
            tar.add(item, arcname=item.name)
    os.replace(tmp, archive)
    return archive


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to the manifest")


# ---------------------------------------------------------------- reading


def open_archive(spec: str) -> Archive:
    """A weights archive (path or URL), checked and unpacked (cached by content)."""
    remote = spec.startswith(("http://", "https://"))
    local = _download(spec) if remote else Path(spec).expanduser()
    try:
        try:
            digest = sha256(local)
        except OSError as e:
            raise ModelError(f"cannot read the weights archive {local}: {e}") from e
        target = cache.WEIGHTS_DIR / "archives" / digest[:32]
        root = prepared(target, lambda out: _extract(local, out))
    finally:
        if remote:  # the downloaded copy is not needed once unpacked
            shutil.rmtree(local.parent, ignore_errors=True)
    manifest = read_manifest(root)
    logger.info(
        "weights archive: fine-tuned from %s, validation WER %s -> %s",
        manifest.base_model,
        manifest.wer_before,
        manifest.wer_after,
    )
    return Archive(root, manifest)


def read_manifest(root: Path) -> Manifest:
    """The manifest of an unpacked archive's folder, checked to be of this format."""
    try:
        data = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"the weights archive has no readable manifest.json ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"the weights archive is not a {FORMAT} archive from train.py")
    return Manifest.from_json(data)


def served_vocabulary(model_dir: Path) -> list[str]:
    """The words a trained model's manifest lists as taught (read as hotwords on request), for
    the served ct2/ folder of an unpacked archive; [] for any other model or none listed."""
    root = Path(model_dir).parent
    if Path(model_dir).name != "ct2" or not (root / "manifest.json").is_file():
        return []
    words = read_manifest(root).vocabulary or []
    return [w for w in words if isinstance(w, str) and w.strip()]


def _download(url: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="weights-"))
    path = folder / "weights.tar"
    try:
        download(url, path)
    except OSError as e:
        raise ModelError(f"cannot download the weights archive {url}: {e}") from e
    return path


def _extract(archive: Path, out: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            _check_members(members)
            tar.extractall(out, members=members, filter="data")
    except tarfile.TarError as e:
        raise ModelError(f"{archive.name} is not a readable weights archive (tar): {e}") from e
    missing = [name for name in REQUIRED if not (out / name).is_file()]
    if missing or not (is_ct2_dir(out / "ct2") and is_hf_dir(out / "hf")):
        missing = missing or ["the hf/ weights"]
        raise ModelError(f"the weights archive misses {', '.join(missing)}; re-run training")
    # Checked before the folder is renamed into place, so a bad archive is never cached.
    manifest = read_manifest(out)
    recorded = manifest.architecture
    if recorded is not None and recorded != architecture(out / "hf"):
        raise ModelError(
            f"the weights archive's model ({architecture(out / 'hf')}) is not the one its "
            f"manifest says was trained from {manifest.base_model!r} ({recorded}); "
            "the archive was assembled from different models: re-run training"
        )


def _check_members(members: list[tarfile.TarInfo]) -> None:
    if len(members) > MAX_MEMBERS:
        raise ModelError(f"the weights archive has {len(members)} entries (limit {MAX_MEMBERS})")
    total = 0
    for m in members:
        path = PurePosixPath(m.name)
        if path.is_absolute() or ".." in path.parts:
            raise ModelError(f"the weights archive has an unsafe path: {m.name!r}")
        if not (m.isfile() or m.isdir()):
            raise ModelError(f"the weights archive has a link or device entry: {m.name!r}")
        total += m.size
        if total > MAX_ARCHIVE_BYTES:
            raise ModelError("the weights archive unpacks to more than 20 GiB")
