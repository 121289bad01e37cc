"""The weights folder: models prepared on first use and unpacked archives, kept on disk.

Everything cached there is built atomically: written into a temporary sibling folder and
renamed into place when complete, under a file lock, so a crash never leaves a half model that
a later run would load, and two processes never build the same folder at once. A leaf module
(it imports no other whisper_ft module), so that `weights` (embedded and converted models) and
`archive` (unpacked weights archives) share it without importing each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Read at call time (`cache.WEIGHTS_DIR`), so that one assignment moves the whole cache.
WEIGHTS_DIR = Path(
    os.environ.get("WHISPER_FT_WEIGHTS_DIR", Path(__file__).parent.parent / "weights")
)


class ModelError(ValueError):
    """A model spec cannot be resolved or loaded; the message says what to fix."""


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(WEIGHTS_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepared(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, building it with `build(tmp_dir)` first if it does not exist yet.

    The build writes into a temporary sibling directory that is renamed to `target` only
    when it finishes, so `target` either is complete or does not exist.
    """
    if target.is_dir():
        return target
    with _locked(target.parent.name + "-" + target.name):
        if target.is_dir():  # another process finished it while we waited
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks (models and archives are gigabytes); raises
    OSError, for the caller to say which file it could not read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
