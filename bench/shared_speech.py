"""The real speech in ../shared (read from there, never copied into the project): the clips
of speech/ and speech-extra/, each folder with a manifest of files, texts and languages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from whisper_ft.audio import load_audio

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
SPEECH = SHARED / "speech"
# General speech for scoring what fine-tuning made worse: both folders of short clips.
GENERAL = ("speech", "speech-extra")


def clips(language: str = "en") -> list[tuple[np.ndarray, str]]:
    """(16 kHz audio, reference text) of every clip of speech/ in `language`."""
    return [(load_audio(path), text) for path, text in files(language)]


def files(language: str = "en", folders: tuple[str, ...] = ("speech",)) -> list[tuple[Path, str]]:
    """(audio file, reference text) of every clip in `language` in `folders`; empty when
    they are absent."""
    found = []
    for folder in folders:
        manifest = SHARED / folder / "manifest.jsonl"
        if not manifest.is_file():
            continue
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        found += [
            (manifest.parent / r["file"], r["text"]) for r in rows if r["language"] == language
        ]
    return found
