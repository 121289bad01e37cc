"""Download a URL to a file: the one way the package fetches data from the network (weights
archives, dataset zips). A leaf module: callers turn its errors into messages of their own."""

from __future__ import annotations

import urllib.request
from pathlib import Path

BLOCK = 1024 * 1024  # bytes read and written at a time
TIMEOUT = 60  # seconds to connect, and between blocks


class TooLarge(ValueError):
    """The download grew past `max_bytes`."""


def download(url: str, dest: Path, max_bytes: int | None = None) -> int:
    """Stream `url` into `dest`; the bytes written. Raises OSError when the URL cannot be
    read and TooLarge past `max_bytes`; either way nothing is left at `dest`."""
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(dest, "wb") as f:
            while block := response.read(BLOCK):
                written += len(block)
                if max_bytes is not None and written > max_bytes:
                    raise TooLarge(f"{url} is larger than {max_bytes} bytes")
                f.write(block)
    except (OSError, TooLarge):
        dest.unlink(missing_ok=True)
        raise
    return written
