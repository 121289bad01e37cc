"""The vocabulary a training run finds in the user's transcripts and serves as hotwords."""

from __future__ import annotations

import pytest

from whisper_ft.vocabulary import (
    MAX_PROMPT_TOKENS,
    absent_from,
    as_hotwords,
    find_vocabulary,
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


def test_a_spelling_that_differs_only_in_case_is_taught(tokenizer):
    references = [
        "Yesterday we installed SOLAR at home.",
        "They compared Trelis with the old system.",
        "The new version is ready today.",
    ]
    heard = [
        "Yesterday we installed solar at home.",  # the user's capitals: a miss to learn
        "They compared trelis with the old system.",  # a name inside a sentence, lower-cased
        "the new version is ready today.",  # a sentence's own capital: nothing to learn
    ]
    found = find_vocabulary(references, heard, tokenizer)
    assert {"SOLAR", "Trelis"} <= set(found)
    assert find_vocabulary(references, references, tokenizer) == []
    # A name at the start of a sentence is heard whatever its case, and is kept as it is
    # written inside one.
    assert find_vocabulary(["Trelis works well."], ["trelis works well."], tokenizer) == []
    found = find_vocabulary(
        ["Solar works.", "We use SOLAR."], ["solar works.", "We use solar."], tokenizer
    )
    assert found == ["SOLAR"]


def test_a_capital_that_starts_a_line_is_the_lines(tokenizer):
    # Verse (and many subtitles) capitalise every line: a line's first word heard in lower
    # case is no miss, where a name inside a line still is.
    verse = (
        "The lantern swung above the quay,\n"
        "Perched where the Morvalen tide runs free,\n"
        "Thrilled by the gulls that wheel and cry."
    )
    heard = (
        "The lantern swung above the quay, perched where the more Valen tide runs free, "
        "thrilled by the gulls that wheel and cry."
    )
    found = find_vocabulary([verse], [heard], tokenizer)
    assert "Morvalen" in found
    assert not {"Perched", "Thrilled"} & set(found)
    # Joined into one line, the same capitals are read as a name's.
    assert {"Perched", "Thrilled"} <= set(
        find_vocabulary([verse.replace("\n", " ")], [heard], tokenizer)
    )


def test_the_trainer_reads_each_cue_as_a_line(tokenizer, monkeypatch):
    import numpy as np

    from whisper_ft import finetune
    from whisper_ft.dataset import Example
    from whisper_ft.subtitles import Cue

    lines = ["The lantern swung above the quay,", "Perched where the Morvalen tide runs free."]
    window = Example(
        np.zeros(16000 * 6, np.float32),
        " ".join(lines),
        (Cue(0.0, 3.0, lines[0]), Cue(3.0, 6.0, lines[1])),
        "verse.wav",
        0.0,
    )
    heard = "The lantern swung above the quay, perched where the more Valen tide runs free."
    monkeypatch.setattr(finetune, "transcribe_examples", lambda *args, **kwargs: [heard])
    processor = type("Processor", (), {"tokenizer": tokenizer})()
    found = finetune.learn_vocabulary(None, processor, [window], "en", finetune.TrainSettings())
    assert "Morvalen" in found and "Perched" not in found
