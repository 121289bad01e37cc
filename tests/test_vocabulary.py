"""The vocabulary a training run finds in the user's transcripts, and how it is served."""

from __future__ import annotations

import pytest

from whisper_ft.transcribe import Segment, Word
from whisper_ft.vocabulary import (
    MAX_PROMPT_TOKENS,
    absent_from,
    as_hotwords,
    find_vocabulary,
    keep_taught_words,
    words,
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import WhisperTokenizer

    from whisper_ft.weights import hf_model

    return WhisperTokenizer.from_pretrained(hf_model("tiny.en"))


REFERENCES = [
    "Please open Zentrafy and check the settings.",
    "We moved the whole team to Zentrafy last week.",
    "Can you send me the Klombrix report?",
    "I think Mixtral works better on the laptop.",
    "Our customers really like the shapeliness of it.",
]
HEARD = [  # what a base model wrote for the same windows
    "Please open Sentrify and check the settings.",
    "We moved the whole team to Zentrafy last week.",  # right once, missed once: still new
    "Can you send me the clum bricks report?",
    "I think mixed rule works better on the laptop.",
    "Our customers really like the shapliness of it.",  # a real word misheard once
]


def test_finds_the_names_the_base_model_missed(tokenizer):
    found = find_vocabulary(REFERENCES, HEARD, tokenizer)
    assert found[:1] == ["Zentrafy"]  # missed, and used most
    assert {"Zentrafy", "Klombrix", "Mixtral"} <= set(found)
    # Common words are never in it, even when misheard ("the", "it" are single tokens).
    assert not {"the", "Please", "report", "laptop", "check"} & set(found)


def test_words_the_base_model_gets_right_are_left_out(tokenizer):
    assert find_vocabulary(REFERENCES, REFERENCES, tokenizer) == []


def test_given_words_come_first_once_each(tokenizer):
    found = find_vocabulary(REFERENCES, HEARD, tokenizer, given=["Quillomat", " zentrafy ", ""])
    assert found[0] == "Quillomat"
    assert [w.lower() for w in found].count("zentrafy") == 1
    assert find_vocabulary([], [], tokenizer, given=["Vortaxa"]) == ["Vortaxa"]


def test_the_prompt_stays_short_enough_for_whisper(tokenizer):
    names = [f"Zorblax{i}ian" for i in range(200)]
    found = find_vocabulary([" ".join(names)], [""], tokenizer)
    assert 10 < len(found) < 200
    assert len(tokenizer.encode(" " + as_hotwords(found), add_special_tokens=False)) <= (
        MAX_PROMPT_TOKENS
    )


def test_words_keep_inner_punctuation():
    assert words("GPT-4o, Klombrix's co.op report.") == ["GPT-4o", "Klombrix's", "co.op", "report"]
    assert as_hotwords([]) is None


def test_common_words_the_multilingual_tokenizer_splits_are_left_out():
    """base's tokenizer splits " today" into pieces but keeps " Today" whole: still common."""
    from transformers import WhisperTokenizer

    from whisper_ft.weights import hf_model

    multilingual = WhisperTokenizer.from_pretrained(hf_model("base"))
    references = ["The new version of Zentrafy is ready today."] * 2
    heard = ["The new version of Sentrify is ready to day."] * 2
    assert find_vocabulary(references, heard, multilingual) == ["Zentrafy"]


def test_absent_from_leaves_out_the_entries_a_text_says():
    vocabulary = ["Zentrafy", "Klombrix", "GPT 4o", "Mixtral"]
    text = "We moved the team to zentrafy, then to GPT 4o."
    assert absent_from(vocabulary, text) == ["Klombrix", "Mixtral"]
    assert absent_from(vocabulary, "Nothing new here.") == vocabulary


TAUGHT = ["Zentrafy", "Klombrix", "Mixtral"]


def segments(*texts: str, timed: bool = False) -> list[Segment]:
    """One segment per text, a second each; with `timed`, a word every 0.1 s."""
    found = []
    for i, text in enumerate(texts):
        timed_words = [
            Word(i + 0.1 * n, i + 0.1 * n + 0.1, " " + w, 0.9) for n, w in enumerate(text.split())
        ]
        found.append(Segment(i, i, i + 1.0, text, -0.2, 0.01, timed_words if timed else None))
    return found


@pytest.mark.parametrize(
    ("plain", "prompted", "served"),
    [
        # The prompted reading spells the taught word: only that change is kept.
        (
            "Yesterday my brother installed sent to a fight at home.",
            "Yesterday, my brother installed Zentrafy at home!",
            "Yesterday my brother installed Zentrafy at home.",
        ),
        # It brings its neighbours along when they are part of the change.
        (
            "Yesterday my brother is told for the footsteps home.",
            "Yesterday my brother installed Klombrix at home.",
            "Yesterday my brother installed Klombrix at home.",
        ),
        # Elsewhere the plain reading stands: the prompt nudged "system" and numbers.
        (
            "If all lunch we can pass, we'll match with the old system in 5 minutes.",
            "If all lunch we compare Mixtral with the old Zestum in five minutes.",
            "If all lunch we compare Mixtral with the old system in 5 minutes.",
        ),
        # A possessive of a taught word counts as the word.
        ("We liked mixed role's price.", "We liked Mixtral's price.", "We liked Mixtral's price."),
        # Made up on speech without the words: nothing alike, or a word written twice.
        (
            "So, bed light brightness, 50%.",
            "Zentrafy, the Zentrafy, is much better.",
            "So, bed light brightness, 50%.",
        ),
        (
            "thy sweet self, to cruel. Thou that art now the fresh ornament",
            "thy sweet self, Zentrafy, Zentrafy, Thou that art now the fresh ornament",
            "thy sweet self, to cruel. Thou that art now the fresh ornament",
        ),
        # A change carrying more than two other words is not the taught word's doing.
        (
            "Before lunch we compared it with the old system.",
            "Before lunch we all went off to compare Klombrix with the old system.",
            "Before lunch we compared it with the old system.",
        ),
        # Nothing taught written: the plain reading, whatever else the prompt changed.
        ("Set a timer for 3 hours.", "Set a timer for three hours.", "Set a timer for 3 hours."),
    ],
)
def test_only_the_taught_words_change_the_plain_reading(plain, prompted, served):
    merged = keep_taught_words(segments(plain), segments(prompted), TAUGHT)
    assert [s.text for s in merged] == [served]


def test_merged_segments_keep_their_times_and_timed_words():
    plain = segments("Please open sent to a fight.", "And check the settings.", timed=True)
    prompted = segments("Please open Zentrafy and", "check the settings.", timed=True)
    merged = keep_taught_words(plain, prompted, TAUGHT)
    assert [s.text for s in merged] == ["Please open Zentrafy", "And check the settings."]
    assert [(s.start, s.end) for s in merged] == [(0.0, 1.0), (1.0, 2.0)]
    zentrafy = merged[0].words[-1]
    assert (zentrafy.word, zentrafy.start) == (" Zentrafy", pytest.approx(0.2))
    assert [w.word for w in merged[1].words] == [" And", " check", " the", " settings."]


def test_without_a_vocabulary_or_a_reading_the_plain_one_stands():
    plain = segments("Please open sent to a fight.")
    assert keep_taught_words(plain, segments("Please open Zentrafy."), []) == plain
    assert keep_taught_words(plain, [], TAUGHT) == plain
    assert keep_taught_words([], segments("Zentrafy."), TAUGHT) == []
