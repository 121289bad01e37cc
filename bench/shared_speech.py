"""The real speech in ../shared/speech (read from there, never copied into the project)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from whisper_ft.audio import load_audio

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"


def clips(language: str = "en") -> list[tuple[np.ndarray, str]]:
    """(16 kHz audio, reference text) of every clip in `language`; empty when absent."""
    return [(load_audio(path), text) for path, text in files(language)]


def files(language: str = "en") -> list[tuple[Path, str]]:
    """(audio file, reference text) of every clip in `language`; empty when absent."""
    manifest = SPEECH / "manifest.jsonl"
    if not manifest.is_file():
        return []
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [(SPEECH / r["file"], r["text"]) for r in rows if r["language"] == language]
