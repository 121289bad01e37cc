"""Subtitle cues from timed words: every path's one cue builder (whisper_ft/subtitles.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
from whisper_ft.outputs import run_task, write_files
from whisper_ft.subtitles import (
    NETFLIX_ENGLISH,
    Cue,
    CueRules,
    TimedWord,
    build_cues,
    parse_srt,
    parse_vtt,
    rule_breaks,
    words_from_text,
    write_srt,
    write_vtt,
)
from whisper_ft.transcribe import Segment, Transcriber, TranscribeSettings, Transcript
from whisper_ft.weights import ct2_model

POEM = (
    "Once upon a midnight dreary, while I pondered, weak and weary, over many a quaint and "
    "curious volume of forgotten lore. While I nodded, nearly napping, suddenly there came a "
    "tapping, as of some one gently rapping, rapping at my chamber door. Tis some visitor, I "
    "muttered, tapping at my chamber door. Only this and nothing more. Mr. Smith paid "
    "10 percent of the price to Edgar Allan Poe in New York on the first of the month."
)


def speak(text: str, start: float = 0.3, pace: float = 0.07, pause: float = 0.45):
    """Timed words as a reader says them: longer words take longer, pauses after
    punctuation."""
    words, t = [], start
    for token in text.split():
        duration = 0.05 + pace * len(token)
        words.append(TimedWord(t, t + duration, token))
        t += duration + (pause if token[-1] in ".,?!;:" else 0.04)
    return words


def texts(cues: list[Cue]) -> list[str]:
    return [" ".join(c.text.split()) for c in cues]


RULES = [
    NETFLIX_ENGLISH,
    CueRules(max_line_width=25, max_line_count=1),  # vertical video
    CueRules(max_words_per_cue=5),
    CueRules(max_cue_seconds=3.0),
    CueRules(max_line_width=60, max_line_count=3),
]


@pytest.mark.parametrize("rules", RULES, ids=lambda r: f"{r.max_line_width}x{r.max_line_count}")
def test_cues_keep_every_word_and_honour_the_rules_exactly(rules):
    words = speak(POEM)
    cues = build_cues(words, rules, end_of_audio=words[-1].end + 2)
    assert " ".join(texts(cues)) == POEM
    for cue, broken in zip(cues, rule_breaks(cues, rules), strict=True):
        # Read at a natural pace with pauses, no cue needs to break any rule.
        assert not broken, (cue, broken)
    for a, b in zip(cues, cues[1:], strict=False):
        assert b.start - a.end >= rules.gap_seconds - 1e-3  # a small gap between cues


def test_cues_end_at_sentence_ends_and_never_after_an_article_or_inside_a_name():
    cues = build_cues(speak(POEM), NETFLIX_ENGLISH)
    ends = [t.split()[-1] for t in texts(cues)]
    assert {"lore.", "door.", "more."} <= set(ends)
    for cue in cues:
        for line in cue.text.split("\n"):
            assert line.split()[-1].lower() not in {"a", "the", "of", "to", "at", "my", "in"}
    lines = [line for c in cues for line in c.text.split("\n")]
    for together in ("10 percent", "Edgar Allan Poe", "New York", "Mr. Smith"):
        assert any(together in line for line in lines), together


def test_a_short_phrase_stays_up_long_enough_to_read_when_a_pause_follows():
    words = [TimedWord(1.0, 1.3, "Yes."), *speak("Then we went home.", start=4.0)]
    cues = build_cues(words, NETFLIX_ENGLISH)
    assert texts(cues)[0] == "Yes."
    assert cues[0].end - cues[0].start >= NETFLIX_ENGLISH.min_cue_seconds
    assert cues[0].end <= cues[1].start - NETFLIX_ENGLISH.gap_seconds + 1e-3


def test_a_cue_is_never_stretched_over_the_next():
    words = [TimedWord(0.0, 0.2, "No."), TimedWord(0.3, 0.5, "Stop."), TimedWord(0.6, 0.9, "Go.")]
    cues = build_cues(words, CueRules(max_words_per_cue=1))
    assert texts(cues) == ["No.", "Stop.", "Go."]
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.end <= b.start
    assert all(c.end > c.start for c in cues)


def test_a_word_wider_than_a_line_gets_a_cue_of_its_own():
    words = speak("see https://example.com/a/very/long/address/for/the/docs now")
    cues = build_cues(words, CueRules(max_line_width=20, max_line_count=1))
    assert " ".join(texts(cues)) == " ".join(w.text for w in words)
    assert "https://example.com/a/very/long/address/for/the/docs" in texts(cues)


def test_words_from_text_share_the_segment_time_in_order():
    words = words_from_text(10.0, 14.0, "one two three four")
    assert [w.text for w in words] == ["one", "two", "three", "four"]
    assert words[0].start == 10.0 and words[-1].end <= 14.0
    for a, b in zip(words, words[1:], strict=False):
        assert a.start < a.end <= b.start


def test_highlighted_vtt_carries_word_times_and_parses_back_to_the_text():
    cues = build_cues(speak(POEM), NETFLIX_ENGLISH)
    vtt = write_vtt(cues, highlight_words=True)
    assert "<00:00:0" in vtt
    back = parse_vtt(vtt)
    assert texts(back) == texts(cues)
    first = vtt.split("\n\n")[1].split("\n")
    tags = [t for line in first[1:] for t in line.split("<")[1:]]
    times = [t.split(">")[0] for t in tags]
    assert times == sorted(times) and len(times) == len(cues[0].words) - 1


def test_highlighted_srt_underlines_each_word_in_turn():
    cue = build_cues(speak("Quoth the Raven, nevermore."), NETFLIX_ENGLISH)[0]
    srt = write_srt([cue], highlight_words=True)
    parts = parse_srt(srt)
    assert len(parts) == 4
    assert [p.text.count("<u>") for p in parts] == [0, 0, 0, 0]  # the parser drops the tags
    assert srt.count("<u>") == 4
    assert parts[0].start == cue.start and parts[-1].end == cue.end
    for a, b in zip(parts, parts[1:], strict=False):
        assert a.end == b.start


def test_files_from_segments_without_word_times_say_the_timing_is_estimated(tmp_path):
    segments = [Segment(0, 0.0, 9.0, POEM[:160], -0.2, 0.01)]
    transcript = Transcript(POEM[:160], "en", 1.0, 10.0, segments)
    files = write_files(transcript, ["vtt", "srt", "txt"], tmp_path, "clip")
    vtt = files["vtt"].read_text()
    assert vtt.startswith("WEBVTT\n\nNOTE ") and "in proportion" in vtt
    cues = parse_vtt(vtt)
    assert " ".join(texts(cues)) == " ".join(POEM[:160].split())
    assert not any(b - {"too_short", "too_fast"} for b in rule_breaks(cues))
    assert files["txt"].read_text().strip() == POEM[:160].strip()


def test_rule_breaks_names_each_rule():
    rules = CueRules(max_words_per_cue=3)
    cues = [
        Cue(0.0, 0.5, "x" * 43),  # too wide, too short, too fast
        Cue(0.6, 9.0, "a\nb\nc d"),  # three lines, four words, too long, into the next
        Cue(8.0, 9.0, "one two three four"),
    ]
    found = rule_breaks(cues, rules)
    assert found[0] == {"width", "too_short", "too_fast"}
    assert found[1] == {"lines", "too_long", "words", "overlap"}
    assert found[2] == {"words"}


@pytest.fixture(scope="module")
def tiny() -> Transcriber:
    return Transcriber(ct2_model("tiny.en"))


def test_the_readme_sample_gives_cues_that_break_no_rule(tmp_path):
    """The sample of the README's first command, with the embedded default model."""
    sample = Path(__file__).resolve().parents[1] / "samples" / "sample.flac"
    model = Transcriber(ct2_model("base"))
    result = run_task(model, sample, "transcribe", TranscribeSettings(), ["srt", "vtt"], tmp_path)
    for name, parse in (("srt", parse_srt), ("vtt", parse_vtt)):
        cues = parse(result.files[name].read_text())
        assert len(cues) >= 2
        assert " ".join(texts(cues)).split() == result.transcript.text.split()
        assert rule_breaks(cues) == [set()] * len(cues), cues


def test_served_subtitles_follow_the_rules(tiny, story_wav, tmp_path):
    """The long-form path of a real model: readable cues, the user's settings honoured."""
    vertical = CueRules(max_line_width=25, max_line_count=1, max_cue_seconds=4.0)
    for rules in (NETFLIX_ENGLISH, vertical):
        out = tmp_path / str(rules.max_line_width)
        out.mkdir()
        result = run_task(
            tiny, story_wav, "transcribe", TranscribeSettings(), ["vtt", "json"], out, rules
        )
        cues = parse_vtt(result.files["vtt"].read_text())
        assert " ".join(texts(cues)).split() == result.transcript.text.split()
        broken = [b - {"too_short"} for b in rule_breaks(cues, rules)]
        assert not any(broken), [(c, b) for c, b in zip(cues, broken, strict=True) if b]
        saved = json.loads(result.files["json"].read_text())
        assert all(s["words"] is None for s in saved["segments"])  # words were not asked for


LONGFORM = Path(__file__).resolve().parents[2] / "shared" / "longform"


@pytest.mark.skipif(not (LONGFORM / "audio").is_dir(), reason="../shared/longform is absent")
def test_real_speech_gives_readable_cues(tiny, tmp_path):
    """Two minutes of a real person reading (the Raven) with tiny.en: a cue breaks a rule
    only where fast speech leaves no room (reading speed or the minimum time), and rarely.
    (The target, at most 5% over all of ../shared/longform, is bench.subtitles's: 0.6% with
    base; here 2 of 33 cues are read at 20.3 and 26.8 characters a second, as spoken.)"""
    audio = load_audio(LONGFORM / "audio" / "raven_stanzas03-15.flac")[: 120 * SAMPLE_RATE]
    clip = tmp_path / "raven.wav"
    write_audio(clip, audio)
    result = run_task(tiny, clip, "transcribe", TranscribeSettings(), ["srt"], tmp_path)
    cues = parse_srt(result.files["srt"].read_text())
    broken = rule_breaks(cues)
    assert len(cues) >= 20
    assert sum(bool(b) for b in broken) <= 0.1 * len(cues), broken
    assert not set().union(*broken) - {"too_fast", "too_short"}
