"""A new-vocabulary dataset made from scratch: invented product names spoken by espeak-ng.

Training recordings are several sentences long, with a VTT each, exactly as a user uploads
them. Held-out sentences put the same names in new sentences, spoken by another voice, so a
test or benchmark measures whether the model learned the *names*, not the sentences.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.speech import espeak, silence
from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
from whisper_ft.subtitles import Cue, write_vtt

# Invented names a stock Whisper cannot spell: what a user's product catalogue looks like.
TERMS = ("Zentrafy", "Klombrix", "Vortaxa", "Quillomat")

TRAIN_TEMPLATES = (
    "Please open {} and check the settings.",
    "The new version of {} is ready today.",
    "We moved the whole team to {} last week.",
    "Can you send me the {} report?",
    "I think {} works better on the laptop.",
    "Our customers really like {}.",
)
HELD_OUT_TEMPLATES = (
    "Yesterday my brother installed {} at home.",
    "Nobody expected {} to sell so well.",
)
GENERAL_SENTENCES = (
    "The weather was cold and windy all morning.",
    "She bought fresh bread and milk at the corner shop.",
)
TRAIN_VOICES = (("en-us", 150), ("en-us+m3", 140), ("en-gb", 160))
HELD_OUT_VOICE = ("en-us+f2", 150)
PAUSE_SECONDS = 0.6


@dataclass(frozen=True)
class Utterance:
    text: str
    path: Path


def sentences(templates, terms=TERMS) -> list[str]:
    return [t.format(term) for term in terms for t in templates]


def speak_all(texts: list[str], folder: Path, voice: tuple[str, int]) -> list[Utterance]:
    folder.mkdir(parents=True, exist_ok=True)
    name, speed = voice
    return [
        Utterance(text, espeak(text, folder / f"{i:03d}.wav", voice=name, speed=speed))
        for i, text in enumerate(texts)
    ]


def recording(utterances: list[Utterance], path: Path) -> Path:
    """Join utterances with pauses into one recording and write its VTT beside it."""
    parts, cues, t = [silence(0.3)], [], 0.3
    for u in utterances:
        audio = load_audio(u.path)
        cues.append(Cue(round(t, 3), round(t + audio.size / SAMPLE_RATE, 3), u.text))
        parts += [audio, silence(PAUSE_SECONDS)]
        t += audio.size / SAMPLE_RATE + PAUSE_SECONDS
    write_audio(path, np.concatenate(parts))
    path.with_suffix(".vtt").write_text(write_vtt(cues), encoding="utf-8")
    return path


def training_zip(folder: Path, per_recording: int = 6) -> Path:
    """A zip of recordings (each a few sentences with a VTT), every term in every voice."""
    texts = sentences(TRAIN_TEMPLATES)
    files = []
    for v, voice in enumerate(TRAIN_VOICES):
        spoken = speak_all(texts, folder / f"voice{v}", voice)
        rng = np.random.default_rng(v)
        order = [spoken[i] for i in rng.permutation(len(spoken))]
        for r in range(0, len(order), per_recording):
            files.append(recording(order[r : r + per_recording], folder / f"talk{v}_{r:02d}.flac"))
    zip_path = folder / "train.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        for f in files:
            z.write(f, f"recordings/{f.name}")
            z.write(f.with_suffix(".vtt"), f"recordings/{f.with_suffix('.vtt').name}")
    return zip_path


def held_out(folder: Path) -> list[Utterance]:
    """New sentences with the terms, in a voice not used for training."""
    return speak_all(sentences(HELD_OUT_TEMPLATES), folder / "held_out", HELD_OUT_VOICE)


def general(folder: Path) -> list[Utterance]:
    return speak_all(list(GENERAL_SENTENCES), folder / "general", HELD_OUT_VOICE)


def term_recall(texts: list[str], utterances: list[Utterance]) -> float:
    """Share of held-out utterances whose transcript spells their term exactly."""
    hits = sum(
        any(term.lower() in text.lower() for term in TERMS if term in u.text)
        for text, u in zip(texts, utterances, strict=True)
    )
    return hits / len(utterances)
