"""The trained weights archive: one tar that training returns and the predictor serves.

    weights.tar
      manifest.json        base model, settings, dataset size, WER before/after, versions
      hf/                  the merged model in Hugging Face form (safetensors + processor)
      ct2/                 the same model in CTranslate2 form, for serving
      adapter/             the LoRA adapter alone (when asked for)

An archive is written under a temporary name and renamed when complete, so a run killed
mid-way never leaves one that looks finished. One that is read is checked before anything is
unpacked: regular files and folders only, no absolute paths, no `..`, bounded sizes; then it
is unpacked once into `weights/archives/<sha256>/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from whisper_ft.fetch import download
from whisper_ft.weights import WEIGHTS_DIR, ModelError, is_ct2_dir, is_hf_dir, prepared

logger = logging.getLogger(__name__)

FORMAT = "whisper-ft-weights/1"
MAX_ARCHIVE_BYTES = 20 * 1024**3  # the largest Whisper (large-v3) in both forms fits easily
MAX_MEMBERS = 1000
REQUIRED = ("manifest.json", "ct2/model.bin", "ct2/config.json", "hf/config.json")
# The shape of a Whisper model: a model trained from another base differs in these.
ARCHITECTURE_KEYS = ("d_model", "encoder_layers", "decoder_layers", "vocab_size", "num_mel_bins")


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


def read_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"the weights archive has no readable manifest.json ({e})") from e
    if manifest.get("format") != FORMAT:
        raise ModelError(f"the weights archive is not a {FORMAT} archive from train.py")
    return manifest


def served_vocabulary(model_dir: Path) -> list[str]:
    """The words a trained model's manifest lists as taught (read as hotwords on request); [] for a
    model that is not from a weights archive or has none."""
    manifest = Path(model_dir).parent / "manifest.json"
    if Path(model_dir).name != "ct2" or not manifest.is_file():
        return []
    words = read_manifest(manifest.parent).get("vocabulary") or []
    return [w for w in words if isinstance(w, str) and w.strip()]


def unpack_weights(spec: str) -> Path:
    """A weights archive (path or URL) -> the folder it is unpacked in (cached by content)."""
    remote = spec.startswith(("http://", "https://"))
    local = _download(spec) if remote else Path(spec).expanduser()
    try:
        digest = _sha256(local)
        root = prepared(WEIGHTS_DIR / "archives" / digest[:32], lambda out: _extract(local, out))
    finally:
        if remote:  # the downloaded copy is not needed once unpacked
            shutil.rmtree(local.parent, ignore_errors=True)
    manifest = read_manifest(root)
    logger.info(
        "weights archive: fine-tuned from %s, validation WER %s -> %s",
        manifest.get("base_model"),
        manifest.get("wer_before"),
        manifest.get("wer_after"),
    )
    return root


def _download(url: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="weights-"))
    path = folder / "weights.tar"
    try:
        download(url, path)
    except OSError as e:
        raise ModelError(f"cannot download the weights archive {url}: {e}") from e
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as e:
        raise ModelError(f"cannot read the weights archive {path}: {e}") from e
    return digest.hexdigest()


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
    recorded = manifest.get("architecture")
    if recorded is not None and recorded != architecture(out / "hf"):
        raise ModelError(
            f"the weights archive's model ({architecture(out / 'hf')}) is not the one its "
            f"manifest says was trained from {manifest.get('base_model')!r} ({recorded}); "
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
