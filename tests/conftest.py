from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.speech import espeak

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """A real (synthetic voice) English speech clip, 16 kHz WAV, about 3 s."""
    return espeak(SENTENCE, tmp_path_factory.mktemp("speech") / "fox.wav")


@pytest.fixture(autouse=True)
def _quiet_libraries():
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
