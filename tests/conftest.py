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


STORY = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A journey of a thousand miles begins with a single step.",
    "The early bird catches the worm.",
    "Every cloud has a silver lining.",
    "Actions speak louder than words.",
    "Practice makes perfect.",
    "Time flies when you are having fun.",
    "Knowledge is power.",
    "Better late than never.",
)


@pytest.fixture(scope="session")
def story_wav(tmp_path_factory) -> Path:
    """About 40 s of speech: ten sentences with one-second pauses (the long-form path)."""
    import numpy as np

    from tests.speech import silence
    from whisper_ft.audio import load_audio, write_audio

    folder = tmp_path_factory.mktemp("story")
    parts = []
    for i, sentence in enumerate(STORY):
        parts += [load_audio(espeak(sentence, folder / f"{i}.wav")), silence(1.0)]
    path = folder / "story.wav"
    write_audio(path, np.concatenate(parts))
    return path


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory):
    """Cog's HTTP server with the Predictor on tiny.en, shared by the server tests."""
    from tests.cog_server import ready_server

    log = tmp_path_factory.mktemp("tiny-server") / "cog.log"
    with ready_server(log, env={"WHISPER_FT_MODEL": "tiny.en"}) as server:
        yield server
