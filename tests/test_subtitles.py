"""Tests for whisper_ft.subtitles: parsing tables, error messages, writers and round trips."""

from __future__ import annotations

import logging

import pytest

from whisper_ft.subtitles import (
    Cue,
    SubtitleError,
    format_timestamp,
    parse_srt,
    parse_subtitles,
    parse_vtt,
    wrap_text,
    write_srt,
    write_txt,
    write_vtt,
)

# --- WebVTT parsing ------------------------------------------------------------------------

ONE = [Cue(1.0, 2.5, "Hello")]

VTT_CASES = {
    "minimal": ("WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nHello\n", ONE),
    "header text": ("WEBVTT - my title\n\n00:00:01.000 --> 00:00:02.500\nHello\n", ONE),
    "header metadata": (
        "WEBVTT\nKind: captions\nLanguage: en\n\n00:00:01.000 --> 00:00:02.500\nHello\n",
        ONE,
    ),
    "cue right after header": ("WEBVTT\n00:00:01.000 --> 00:00:02.500\nHello\n", ONE),
    "leading blank lines": ("\n\nWEBVTT\n\n00:00:01.000 --> 00:00:02.500\nHello", ONE),
    "bom": ("\ufeffWEBVTT\n\n00:00:01.000 --> 00:00:02.500\nHello\n", ONE),
    "no hours": ("WEBVTT\n\n00:01.000 --> 00:02.500\nHello\n", ONE),
    "comma decimal": ("WEBVTT\n\n00:00:01,000 --> 00:00:02,500\nHello\n", ONE),
    "short fraction": ("WEBVTT\n\n00:00:01.0 --> 00:00:02.5\nHello\n", ONE),
    "no spaces around arrow": ("WEBVTT\n\n00:00:01.000-->00:00:02.500\nHello\n", ONE),
    "identifier": ("WEBVTT\n\nintro-1\n00:00:01.000 --> 00:00:02.500\nHello\n", ONE),
    "numeric identifier": ("WEBVTT\n\n1\n00:00:01.000 --> 00:00:02.500\nHello\n", ONE),
    "cue settings": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500 align:start position:10% line:0\nHello\n",
        ONE,
    ),
    "note style region blocks": (
        "WEBVTT\n\nSTYLE\n::cue { color: red }\n\nREGION\nid:fred width:40%\n\n"
        "NOTE a comment\nspanning lines\n\nNOTE\n\n"
        "00:00:01.000 --> 00:00:02.500\nHello\n\nNOTE trailing\n",
        ONE,
    ),
    "multi-line cue": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nHello\nworld\n",
        [Cue(1.0, 2.5, "Hello\nworld")],
    ),
    "crlf": ("WEBVTT\r\n\r\n00:00:01.000 --> 00:00:02.500\r\nHello\r\n", ONE),
    "cr": ("WEBVTT\r\r00:00:01.000 --> 00:00:02.500\rHello\r", ONE),
    "blank lines with spaces": (
        "WEBVTT\n \t\n00:00:01.000 --> 00:00:02.500\nHello\n   \n00:00:03.000 --> 00:00:04.000\n"
        "Bye\n",
        [Cue(1.0, 2.5, "Hello"), Cue(3.0, 4.0, "Bye")],
    ),
    "tags stripped": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n"
        "<v Roger Bingham>We <i>are</i> <b>in</b> <c.yellow.bg_blue>New York</c>\n"
        "<00:00:01.500>City<00:00:02.000> <lang en>now</lang>\n",
        [Cue(1.0, 2.5, "We are in New York\nCity now")],
    ),
    "entities": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n"
        "Tom &amp; Jerry &lt;3 &gt;&gt;&nbsp;hi &#39;x&#x27;\n",
        [Cue(1.0, 2.5, "Tom & Jerry <3 >>\u00a0hi 'x'")],
    ),
    "ampersand without entity kept": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nAT&T &notes & co\n",
        [Cue(1.0, 2.5, "AT&T &notes & co")],
    ),
    "text lines stripped": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n  Hello  \n\tworld\n",
        [Cue(1.0, 2.5, "Hello\nworld")],
    ),
    "cue without text dropped": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n\n00:00:03.000 --> 00:00:04.000\n<i></i>\n\n"
        "00:00:05.000 --> 00:00:06.000\nKept\n",
        [Cue(5.0, 6.0, "Kept")],
    ),
    "missing blank line between cues": (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nHello\n2\n00:00:03.000 --> 00:00:04.000\nBye\n",
        [Cue(1.0, 2.5, "Hello"), Cue(3.0, 4.0, "Bye")],
    ),
    "file order kept, overlaps kept": (
        "WEBVTT\n\n00:00:05.000 --> 00:00:06.000\nB\n\n00:00:01.000 --> 00:00:09.000\nA\n\n"
        "00:00:01.000 --> 00:00:09.000\nA\n",
        [Cue(5.0, 6.0, "B"), Cue(1.0, 9.0, "A"), Cue(1.0, 9.0, "A")],
    ),
    "hours and milliseconds": (
        "WEBVTT\n\n01:02:03.456 --> 101:00:00.001\nLong\n",
        [Cue(3723.456, 363600.001, "Long")],
    ),
    "zero-length cue": ("WEBVTT\n\n00:00:01.000 --> 00:00:01.000\nBlip\n", [Cue(1, 1, "Blip")]),
    "empty file": ("", []),
    "whitespace only": ("\ufeff \n\r\n\t\n", []),
    "header only": ("WEBVTT\n", []),
    "header and notes only": ("WEBVTT\n\nNOTE nothing here\n", []),
}


@pytest.mark.parametrize(("text", "expected"), VTT_CASES.values(), ids=VTT_CASES.keys())
def test_parse_vtt(text: str, expected: list[Cue]) -> None:
    assert parse_vtt(text) == expected


def test_parse_vtt_without_header_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="whisper_ft.subtitles"):
        cues = parse_vtt("00:00:01.000 --> 00:00:02.500\nHello\n")
    assert cues == ONE
    assert "WEBVTT" in caplog.text


def test_parse_vtt_without_header_error_mentions_header() -> None:
    with pytest.raises(SubtitleError, match=r"line 1: text outside any cue.*'WEBVTT'"):
        parse_vtt("Just some text\nno timings at all\n")


def test_parse_vtt_times_are_exact_millisecond_floats() -> None:
    (cue,) = parse_vtt("WEBVTT\n\n00:00:00.100 --> 00:00:00.300\nx\n")
    assert (cue.start, cue.end) == (0.1, 0.3)


# --- SRT parsing ---------------------------------------------------------------------------

SRT_CASES = {
    "standard": (
        "1\n00:00:01,000 --> 00:00:02,500\nHello\n\n2\n00:00:03,000 --> 00:00:04,000\nBye\n",
        [Cue(1.0, 2.5, "Hello"), Cue(3.0, 4.0, "Bye")],
    ),
    "dot decimal": ("1\n00:00:01.000 --> 00:00:02.500\nHello\n", ONE),
    "bom": ("\ufeff1\n00:00:01,000 --> 00:00:02,500\nHello\n", ONE),
    "crlf": ("1\r\n00:00:01,000 --> 00:00:02,500\r\nHello\r\n\r\n", ONE),
    "no trailing newline": ("1\n00:00:01,000 --> 00:00:02,500\nHello", ONE),
    "extra blank lines": ("\n\n1\n00:00:01,000 --> 00:00:02,500\nHello\n\n\n \n", ONE),
    "missing numbering": ("00:00:01,000 --> 00:00:02,500\nHello\n", ONE),
    "odd numbering": (
        "7\n00:00:01,000 --> 00:00:02,500\nHello\n\nx\n00:00:03,000 --> 00:00:04,000\nBye\n",
        [Cue(1.0, 2.5, "Hello"), Cue(3.0, 4.0, "Bye")],
    ),
    "multi-line": (
        "1\n00:00:01,000 --> 00:00:02,500\nHello\nthere\nworld\n",
        [Cue(1.0, 2.5, "Hello\nthere\nworld")],
    ),
    "position coordinates": (
        "1\n00:00:01,000 --> 00:00:02,500  X1:100 X2:200 Y1:10 Y2:20\nHello\n",
        ONE,
    ),
    "tags and style codes": (
        '1\n00:00:01,000 --> 00:00:02,500\n{\\an8}<i>Hello</i> <font color="#ff0000">red</font>'
        "\n<B>bold</B> {\\i1}x{\\i0} I <3 you > them\n",
        [Cue(1.0, 2.5, "Hello red\nbold x I <3 you > them")],
    ),
    "entities": (
        "1\n00:00:01,000 --> 00:00:02,500\n&gt;&gt; Tom &amp; Jerry\n",
        [Cue(1.0, 2.5, ">> Tom & Jerry")],
    ),
    "missing blank line between cues": (
        "1\n00:00:01,000 --> 00:00:02,500\nHello\n2\n00:00:03,000 --> 00:00:04,000\nBye\n",
        [Cue(1.0, 2.5, "Hello"), Cue(3.0, 4.0, "Bye")],
    ),
    "cue without text dropped": (
        "1\n00:00:01,000 --> 00:00:02,500\n\n2\n00:00:03,000 --> 00:00:04,000\nBye\n",
        [Cue(3.0, 4.0, "Bye")],
    ),
    "out of order kept": (
        "1\n00:00:03,000 --> 00:00:04,000\nB\n\n2\n00:00:01,000 --> 00:00:02,500\nA\n",
        [Cue(3.0, 4.0, "B"), Cue(1.0, 2.5, "A")],
    ),
    "webvtt content in srt": ("WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n<i>Hello</i>\n", ONE),
    "empty file": ("", []),
}


@pytest.mark.parametrize(("text", "expected"), SRT_CASES.values(), ids=SRT_CASES.keys())
def test_parse_srt(text: str, expected: list[Cue]) -> None:
    assert parse_srt(text) == expected


# --- errors --------------------------------------------------------------------------------

ERROR_CASES = {
    "garbage timing": ("1\nabc --> def\nHello\n", r"line 2: malformed timestamp 'abc'"),
    "missing end": ("1\n00:00:01,000 -->\nHello\n", r"line 2: malformed timing line"),
    "two arrows": (
        "00:00:01,000 --> 00:00:02,000 --> 00:00:03,000\nHi\n",
        r"line 1: malformed timing line",
    ),
    "colon before millis": (
        "1\n00:00:01:000 --> 00:00:02,000\nHi\n",
        r"line 2: malformed timestamp '00:00:01:000'",
    ),
    "four fraction digits": (
        "\n\n1\n00:00:01,0000 --> 00:00:02,000\nHi\n",
        r"line 4: malformed timestamp '00:00:01,0000'",
    ),
    "arrow in text": (
        "1\n00:00:01,000 --> 00:00:02,000\nHi\nfrom a --> b\n",
        r"line 4: malformed timestamp 'from a'",
    ),
    "minutes 60": (
        "1\n00:60:00,000 --> 01:00:00,000\nHi\n",
        r"line 2: minutes and seconds must be below 60 in '00:60:00,000'",
    ),
    "end before start": (
        "1\n00:00:01,000 --> 00:00:02,000\nOK\n\n2\n00:00:05,000 --> 00:00:04,000\nBad\n",
        r"line 6: cue ends \(00:00:04,000\) before it starts \(00:00:05,000\)",
    ),
    "negative start": (
        "1\n-00:00:01,000 --> 00:00:02,000\nHi\n",
        r"line 2: negative time '-00:00:01,000'",
    ),
    "negative end": (
        "1\n00:00:01,000 --> -00:00:02,000\nHi\n",
        r"line 2: negative time '-00:00:02,000'",
    ),
    "blank line inside cue text": (
        "1\n00:00:01,000 --> 00:00:02,000\nHello\n\nworld\n",
        r"line 5: text outside any cue: 'world'.*blank line inside",
    ),
    "text before numbering": (
        "1\n00:00:01,000 --> 00:00:02,000\nHi\n\nstray\n2\n00:00:03,000 --> 00:00:04,000\nYo\n",
        r"line 5: text outside any cue: 'stray'",
    ),
}


@pytest.mark.parametrize("parse", [parse_srt, parse_vtt], ids=["srt", "vtt"])
@pytest.mark.parametrize(("text", "pattern"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_parse_errors_name_line_and_problem(parse, text: str, pattern: str) -> None:
    if parse is parse_vtt:
        # Same content behind a header (with its blank line) moves everything down two lines.
        text = "WEBVTT\n\n" + text
        pattern = _shift_line(pattern, 2)
    with pytest.raises(SubtitleError, match=pattern) as info:
        parse(text)
    assert isinstance(info.value, ValueError)
    assert info.value.line == int(pattern.split()[1].rstrip(":"))


def _shift_line(pattern: str, by: int) -> str:
    head, number, rest = pattern.split(" ", 2)
    return f"{head} {int(number.rstrip(':')) + by}: {rest}"


def test_vtt_text_only_block_is_error() -> None:
    with pytest.raises(SubtitleError, match=r"line 3: text outside any cue"):
        parse_vtt("WEBVTT\n\nhello\nthere\n00:00:01.000 --> 00:00:02.000\nx\n")


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [(".vtt", "vtt"), (".VTT", "vtt"), (".srt", "srt"), (".Srt", "srt")],
)
def test_parse_subtitles_dispatches_on_suffix(suffix: str, expected: str) -> None:
    # "{\an8}" is only stripped by the SRT parser, so the result shows which parser ran.
    text = "00:00:01.000 --> 00:00:02.500\n{\\an8}Hello\n"
    assert parse_subtitles(text, suffix) == [
        Cue(1.0, 2.5, "Hello" if expected == "srt" else "{\\an8}Hello")
    ]


@pytest.mark.parametrize("suffix", [".txt", "", "vtt", ".vtt.bak", ".ass"])
def test_parse_subtitles_rejects_other_suffixes(suffix: str) -> None:
    with pytest.raises(ValueError, match="unsupported subtitle file type") as info:
        parse_subtitles("", suffix)
    assert not isinstance(info.value, SubtitleError)


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "kwargs", "expected"),
    [
        (0, {}, "00:00:00.000"),
        (1.5, {}, "00:00:01.500"),
        (62.345, {}, "00:01:02.345"),
        (3723.456, {}, "01:02:03.456"),
        (59.9996, {}, "00:01:00.000"),
        (59.9994, {}, "00:00:59.999"),
        (3599.9995, {}, "01:00:00.000"),
        (1.0005, {}, "00:00:01.001"),
        (0.0004999, {}, "00:00:00.000"),
        (360000.0, {}, "100:00:00.000"),
        (62.345, {"decimal": ","}, "00:01:02,345"),
        (62.345, {"always_hours": False}, "01:02.345"),
        (3723.456, {"always_hours": False}, "01:02:03.456"),
        (3599.9999, {"always_hours": False}, "01:00:00.000"),
        (-0.0, {}, "00:00:00.000"),
    ],
)
def test_format_timestamp(seconds: float, kwargs: dict, expected: str) -> None:
    assert format_timestamp(seconds, **kwargs) == expected


@pytest.mark.parametrize("seconds", [-0.001, -1.0, float("nan"), float("inf")])
def test_format_timestamp_rejects_bad_times(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite and not negative"):
        format_timestamp(seconds)


def test_format_timestamp_rejects_bad_decimal() -> None:
    with pytest.raises(ValueError, match="decimal"):
        format_timestamp(1.0, decimal=":")


# --- writers -------------------------------------------------------------------------------

CUES = [Cue(1.0, 2.5, "Hello"), Cue(62.345, 3723.4564, "Two\nlines")]


def test_write_vtt_format() -> None:
    assert write_vtt(CUES) == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:02.500\nHello\n\n"
        "00:01:02.345 --> 01:02:03.456\nTwo\nlines\n"
    )


def test_write_srt_format() -> None:
    assert write_srt(CUES) == (
        "1\n00:00:01,000 --> 00:00:02,500\nHello\n\n2\n00:01:02,345 --> 01:02:03,456\nTwo\nlines\n"
    )


def test_write_txt_format() -> None:
    cues = [*CUES, Cue(4, 5, "  \n "), Cue(5, 6, "  spaced   out\r\nline ")]
    assert write_txt(cues) == "Hello\nTwo lines\nspaced out line\n"


@pytest.mark.parametrize(
    ("writer", "expected"), [(write_vtt, "WEBVTT\n"), (write_srt, ""), (write_txt, "")]
)
def test_writers_with_no_cues(writer, expected: str) -> None:
    assert writer([]) == expected


def test_writers_collapse_blank_lines_and_skip_empty_cues() -> None:
    cues = [Cue(0, 1, "one\n\n  \r\ntwo  \n"), Cue(1, 2, "\n \n"), Cue(2, 3, "three")]
    assert write_vtt(cues) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\none\ntwo\n\n"
        "00:00:02.000 --> 00:00:03.000\nthree\n"
    )
    # SRT numbering stays consecutive when an empty cue is skipped.
    assert write_srt(cues) == (
        "1\n00:00:00,000 --> 00:00:01,000\none\ntwo\n\n2\n00:00:02,000 --> 00:00:03,000\nthree\n"
    )


def test_writers_never_put_an_arrow_in_text() -> None:
    cues = [Cue(0, 1, "a --> b"), Cue(1, 2, "c ---> d <i> & e")]
    vtt, srt = write_vtt(cues), write_srt(cues)
    assert "a --&gt; b" in vtt and "c ---&gt; d &lt;i&gt; &amp; e" in vtt
    assert "a -> b" in srt and "c -> d" in srt
    for text in (vtt, srt):
        arrows = [line for line in text.splitlines() if "-->" in line]
        assert len(arrows) == 2 and all(line.startswith("00:00:0") for line in arrows)
    assert [c.text for c in parse_vtt(vtt)] == ["a --> b", "c ---> d <i> & e"]


@pytest.mark.parametrize("writer", [write_vtt, write_srt])
def test_writers_reject_bad_times(writer) -> None:
    with pytest.raises(ValueError, match="cue 1 ends"):
        writer([Cue(0, 1, "ok"), Cue(2.0, 1.0, "bad")])
    with pytest.raises(ValueError, match="not negative"):
        writer([Cue(-1.0, 1.0, "bad")])


def test_writers_round_end_and_start_before_comparing() -> None:
    # Equal after rounding to milliseconds: a zero-length cue, not an error.
    assert "00:00:01.000 --> 00:00:01.000" in write_vtt([Cue(1.0004, 1.0001, "x")])


# --- round trips ---------------------------------------------------------------------------

ROUND_TRIP_CASES = {
    "single": [Cue(0.0, 1.0, "Hello")],
    "several": [Cue(0.5, 1.25, "One"), Cue(1.25, 3.999, "Two"), Cue(4.0, 4.001, "Three")],
    "multi-line": [Cue(1.0, 2.0, "First line\nsecond line\nthird")],
    "unicode": [
        Cue(1.0, 2.0, "Grüße, ça va? ñ"),
        Cue(2.0, 3.0, "日本語のテキスト"),
        Cue(3.0, 4.0, "مرحبا بالعالم"),
        Cue(4.0, 5.0, "emoji 🎤🎶 and\u00a0nbsp"),
    ],
    "long text": [Cue(10.0, 20.0, " ".join(["word"] * 200) + "\n" + "x" * 500)],
    "punctuation": [Cue(1.0, 2.0, "Tom & Jerry: 5 > 3, I <3 you; a -> b; {curly} [square]")],
    "numeric text": [Cue(1.0, 2.0, "42"), Cue(2.0, 3.0, "1\n2")],
    "keyword-like text": [Cue(1.0, 2.0, "NOTE this\nWEBVTT\nSTYLE")],
    "zero length and overlap": [Cue(5.0, 5.0, "blip"), Cue(1.0, 9.0, "back in time")],
    "awkward floats": [Cue(0.1, 0.3, "a"), Cue(3723.456, 3723.457, "b"), Cue(0.001, 59.999, "c")],
    "long hours": [Cue(3599.999, 360000.123, "late")],
    "empty list": [],
}


@pytest.mark.parametrize(
    ("write", "parse"), [(write_vtt, parse_vtt), (write_srt, parse_srt)], ids=["vtt", "srt"]
)
@pytest.mark.parametrize("cues", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_round_trip(write, parse, cues: list[Cue]) -> None:
    assert parse(write(cues)) == cues


@pytest.mark.parametrize("cues", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_vtt_escapes_round_trip(cues: list[Cue]) -> None:
    # Text that looks like markup or an arrow survives WebVTT exactly.
    tricky = [Cue(c.start, c.end, f"{c.text}\n<b>&amp; --> x</b>") for c in cues]
    assert parse_vtt(write_vtt(tricky)) == tricky


def test_round_trip_many_millisecond_times() -> None:
    cues = [Cue(ms / 1000, (ms + 7) / 1000, f"cue {ms}") for ms in range(0, 100_000, 997)]
    assert parse_vtt(write_vtt(cues)) == cues
    assert parse_srt(write_srt(cues)) == cues


# --- wrap_text -----------------------------------------------------------------------------

SENTENCE = "The quick brown fox jumps over the lazy dog and keeps running far away"


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("", {}, ""),
        ("   \n ", {}, ""),
        ("Short line", {}, "Short line"),
        ("x" * 42, {}, "x" * 42),
        ("  Hello \n  world  ", {}, "Hello world"),
        (SENTENCE, {}, "The quick brown fox jumps over the\nlazy dog and keeps running far away"),
        ("aaaa bb cc dddd", {"width": 10}, "aaaa bb\ncc dddd"),
        (
            "one two three four five six",
            {"width": 10, "max_lines": 3},
            "one two\nthree four\nfive six",
        ),
        ("one two three four", {"width": 8, "max_lines": 1}, "one two three four"),
        ("tiny " + "x" * 50, {}, "tiny\n" + "x" * 50),
        ("a b", {"width": 1, "max_lines": 5}, "a\nb"),
    ],
)
def test_wrap_text(text: str, kwargs: dict, expected: str) -> None:
    assert wrap_text(text, **kwargs) == expected


@pytest.mark.parametrize(
    ("width", "max_lines"), [(42, 2), (32, 2), (20, 3), (10, 2), (5, 4), (80, 1)]
)
@pytest.mark.parametrize("text", [SENTENCE, SENTENCE * 3, "word " * 40, "Hi there"])
def test_wrap_text_keeps_words_and_limits(text: str, width: int, max_lines: int) -> None:
    wrapped = wrap_text(text, width, max_lines)
    lines = wrapped.split("\n")
    assert wrapped.split() == text.split()  # nothing dropped, order kept
    assert len(lines) <= max_lines
    if len(text.strip()) <= width:
        assert lines == [" ".join(text.split())]
    if all(len(line) <= width for line in lines) and len(lines) == 2:
        # Balanced: moving one word across the break would not make it more even.
        first, second = (line.split() for line in lines)
        gap = abs(len(lines[0]) - len(lines[1]))
        for moved in (
            (first[:-1], [first[-1], *second]),
            ([*first, second[0]], second[1:]),
        ):
            if moved[0] and moved[1]:
                a, b = (" ".join(words) for words in moved)
                assert abs(len(a) - len(b)) >= gap or max(len(a), len(b)) > width


def test_wrap_text_too_long_keeps_max_lines_balanced() -> None:
    text = " ".join(["word"] * 30)  # 149 characters
    lines = wrap_text(text, width=42, max_lines=2).split("\n")
    assert len(lines) == 2
    assert abs(len(lines[0]) - len(lines[1])) <= 5


@pytest.mark.parametrize(("width", "max_lines"), [(0, 2), (42, 0), (-1, -1)])
def test_wrap_text_rejects_bad_arguments(width: int, max_lines: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        wrap_text("hello", width, max_lines)


def test_cue_is_frozen() -> None:
    cue = Cue(1.0, 2.0, "x")
    with pytest.raises(AttributeError):
        cue.text = "y"  # type: ignore[misc]
