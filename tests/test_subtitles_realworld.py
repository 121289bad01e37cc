"""Subtitle parsing on real-world files: YouTube's rolling auto-captions, ASS/SSA codes,
malformed tags, text encodings, and a regression suite over the shared corpus of 197 files
from other projects' test suites (../shared/subtitles; those tests skip when it is absent).

The corpus comparison follows the corpus's own run.py: cues without text are left out on
both sides, cues are compared in (start, -end) order, times to the millisecond, and text
line by line after stripping each line and dropping blank ones.
"""

from __future__ import annotations

import codecs
import html
import json
import re
from pathlib import Path

import pytest

from whisper_ft.dataset import DatasetError, decode_transcript, read_transcript
from whisper_ft.subtitles import Cue, SubtitleError, parse_srt, parse_subtitles, parse_vtt

# --- YouTube auto-captions -----------------------------------------------------------------

# As yt-dlp writes them: a line holding one space after each timing line, inline word times,
# each cue repeating the previous cue's last line, 10 ms cues repeating the text again. The
# last cue says "okay welcome" a second time: a genuine repeat, kept.
YOUTUBE_VTT = (
    "WEBVTT\nKind: captions\nLanguage: en\n\n"
    "00:00:00.000 --> 00:00:02.000 align:start position:0%\n \n"
    "okay<00:00:00.500><c> welcome</c><00:00:01.000><c> to</c>\n\n"
    "00:00:02.000 --> 00:00:02.010 align:start position:0%\nokay welcome to\n \n\n"
    "00:00:02.010 --> 00:00:04.000 align:start position:0%\nokay welcome to\n"
    "this<00:00:02.500><c> session</c>\n\n"
    "00:00:04.000 --> 00:00:04.010 align:start position:0%\nthis session\n \n\n"
    "00:00:04.010 --> 00:00:06.000 align:start position:0%\nthis session\n"
    "okay<00:00:04.500><c> welcome</c>\n"
)

# The same kind of captions converted to SRT: no word times, and the first cue lost its text
# (its words show up in the 10 ms cue after it).
YOUTUBE_SRT = (
    "1\n00:00:00,000 --> 00:00:02,000\n\n\n"
    "2\n00:00:02,000 --> 00:00:02,010\nokay welcome to\n\n"
    "3\n00:00:02,010 --> 00:00:04,000\nokay welcome to\nthis session\n\n"
    "4\n00:00:04,000 --> 00:00:04,010\nthis session\n\n"
    "5\n00:00:04,010 --> 00:00:06,000\nthis session\nis about captions\n\n"
    "6\n00:00:06,000 --> 00:00:06,010\nis about captions\n\n"
    "7\n00:00:06,010 --> 00:00:08,000\nis about captions\nthat roll\n"
)


def test_youtube_vtt_reads_each_spoken_line_once() -> None:
    assert parse_vtt(YOUTUBE_VTT) == [
        Cue(0.0, 2.0, "okay welcome to"),
        Cue(2.01, 4.0, "this session"),
        Cue(4.01, 6.0, "okay welcome"),
    ]


def test_youtube_srt_reads_each_spoken_line_once() -> None:
    assert parse_srt(YOUTUBE_SRT) == [
        Cue(0.0, 2.01, "okay welcome to"),  # the empty first cue's start: when it was said
        Cue(2.01, 4.0, "this session"),
        Cue(4.01, 6.0, "is about captions"),
        Cue(6.01, 8.0, "that roll"),
    ]


def test_space_only_line_after_timing_line_is_not_a_blank_line() -> None:
    text = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n \t\nhello\n"
    assert parse_vtt(text) == [Cue(1.0, 2.0, "hello")]
    assert parse_srt("1\n00:00:01,000 --> 00:00:02,000\n \nhello\n") == [Cue(1.0, 2.0, "hello")]


def test_space_only_line_inside_text_ends_the_cue_and_the_error_says_so() -> None:
    with pytest.raises(SubtitleError, match=r"line 6: text outside any cue: 'world'.*only spaces"):
        parse_vtt("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhello\n  \nworld\n")


def test_genuine_repeats_in_ordinary_cues_are_kept() -> None:
    vtt = "WEBVTT\n\n00:01.000 --> 00:02.000\nNo!\n\n00:02.000 --> 00:03.000\nNo!\n"
    assert parse_vtt(vtt) == [Cue(1.0, 2.0, "No!"), Cue(2.0, 3.0, "No!")]
    # A two-line cue that starts with the previous cue's last line, once: not a rolling file.
    srt = (
        "1\n00:00:01,000 --> 00:00:02,000\nWho's there?\nIt's me.\n\n"
        "2\n00:00:02,500 --> 00:00:04,000\nIt's me.\nOpen the door.\n\n"
        "3\n00:00:05,000 --> 00:00:06,000\nFine.\n"
    )
    assert [cue.text for cue in parse_srt(srt)] == [
        "Who's there?\nIt's me.",
        "It's me.\nOpen the door.",
        "Fine.",
    ]


def test_word_timed_file_with_one_repeated_line_among_many_keeps_it() -> None:
    # Inline word times alone do not make a file rolling: most multi-line cues must roll.
    cues = [("Na na na", "Na na na"), ("Na na na", "hey hey"), ("one more", "time"), ("so", "long")]
    text = "WEBVTT\n\n" + "\n".join(
        f"00:00:0{k}.000 --> 00:00:0{k}.900\n{a}\n<00:00:0{k}.500>{b}\n"
        for k, (a, b) in enumerate(cues)
    )
    assert [cue.text for cue in parse_vtt(text)] == [f"{a}\n{b}" for a, b in cues]


def test_tiny_cue_that_repeats_the_previous_text_is_dropped() -> None:
    text = (
        "WEBVTT\n\n00:01.000 --> 00:02.000\nHello\n\n00:02.000 --> 00:02.010\nHello\n\n"
        "00:02.010 --> 00:02.020\nnew words\n"
    )
    assert parse_vtt(text) == [Cue(1.0, 2.0, "Hello"), Cue(2.01, 2.02, "new words")]


# --- ASS/SSA codes and malformed tags ------------------------------------------------------


def _srt_text(line: str) -> str:
    cues = parse_srt(f"1\n00:00:01,000 --> 00:00:02,000\n{line}\n")
    return cues[0].text if cues else ""


def _vtt_text(line: str) -> str:
    cues = parse_vtt(f"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n{line}\n")
    return cues[0].text if cues else ""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{\\an8}Top line", "Top line"),
        ("{\\i1}word{\\i0} here", "word here"),
        ("Line one\\NLine two", "Line one\nLine two"),
        ("soft\\nbreak", "soft\nbreak"),
        ("A\\h\\hB", "A  B"),
        ("Hide: {Y:i}this", "Hide: this"),
        ("{c:$0000FF}blue", "blue"),
        ("but show this: {normal text}", "but show this: {normal text}"),
        ("Show this: \\TEST and this: \\-)", "Show this: \\TEST and this: \\-)"),
    ],
)
def test_srt_ass_codes_are_removed(line: str, expected: str) -> None:
    assert _srt_text(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("<i>never closed", "never closed"),
        ('<font color="red" >red</font>', "red"),
        ("cut off <font color=red", "cut off"),
        ("< u>loose< /  u > tags", "loose tags"),
        ("tail</xyz>", "tail"),
        ("<wwww>unknown</wwww> tag", "unknown tag"),
        ("<tag par=5>with</tag> parameters", "with parameters"),
        # Not tags: text that merely contains "<".
        ("a < b and b > c", "a < b and b > c"),
        ("2<3,5>1,4<6", "2<3,5>1,4<6"),
        ("I <3 you", "I <3 you"),
        ("is a <", "is a <"),
    ],
)
def test_srt_malformed_tags_are_removed_and_other_text_kept(line: str, expected: str) -> None:
    assert _srt_text(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("<i>never closed", "never closed"),
        ("<v Roger>We are here", "We are here"),
        ("said <c.yellow", "said"),
        ("This is </c awesome!", "This is"),
        ("<00:00:01.500 unclosed time", ""),
        ("a < b", "a < b"),
        ("&lt;i&gt; is written text", "<i> is written text"),
        ("AT&T &amp more", "AT&T & more"),
        ("&notes stay", "&notes stay"),
    ],
)
def test_vtt_malformed_tags_are_removed_and_other_text_kept(line: str, expected: str) -> None:
    assert _vtt_text(line) == expected


def test_vtt_tag_left_open_runs_to_its_closing_bracket_on_a_later_line() -> None:
    text = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nkept </\nc>tail\n"
    assert parse_vtt(text) == [Cue(1.0, 2.0, "kept tail")]


def test_end_time_glued_to_a_cue_setting() -> None:
    text = "WEBVTT\n\n00:00.000 --> 00:01.000line:40% size:40%\nText\n"
    assert parse_vtt(text) == [Cue(0.0, 1.0, "Text")]


# --- encodings -----------------------------------------------------------------------------

SRT_TEXT = "1\n00:00:01,000 --> 00:00:02,000\nCafé ☕ ça va\n"
SRT_CUES = [Cue(1.0, 2.0, "Café ☕ ça va")]


@pytest.mark.parametrize(
    ("bom", "codec"),
    [
        (b"", "utf-8"),
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"],
)
def test_unicode_encodings_with_a_bom_are_read(tmp_path: Path, bom: bytes, codec: str) -> None:
    path = tmp_path / "talk.srt"
    path.write_bytes(bom + SRT_TEXT.encode(codec))
    assert read_transcript(path) == SRT_CUES


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (codecs.BOM_UTF32_LE + b"\x00\x00\x11\x00", r"UTF-32 LE byte order mark but is not"),
        (codecs.BOM_UTF32_BE + b"\x00\x11\x00\x00", r"UTF-32 BE byte order mark but is not"),
        (codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"c", r"UTF-16 LE byte order mark"),
        (SRT_TEXT.encode("utf-16-le"), r"zero bytes, like UTF-16 or UTF-32 without a byte"),
        (
            "1\n00:00:01,000 --> 00:00:02,000\nCafé, ça va ?\n".encode("cp1252"),
            r"not UTF-8 \(byte 0xe9 .*probably Windows-1252",
        ),
        ("1\n00:00:01,000 --> 00:00:02,000\n宇宙守护神\n".encode("gb2312"), r"not UTF-8"),
    ],
    ids=["utf-32-le", "utf-32-be", "utf-16-le", "utf-16-no-bom", "windows-1252", "gb2312"],
)
def test_undecodable_text_names_the_encoding_problem(
    tmp_path: Path, data: bytes, match: str
) -> None:
    path = tmp_path / "talk.srt"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=match) as info:
        read_transcript(path)
    assert str(info.value).startswith("talk.srt: ")
    assert str(info.value).endswith("save it as UTF-8")


def test_gb2312_is_not_mistaken_for_windows_1252(tmp_path: Path) -> None:
    path = tmp_path / "talk.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,000\n他能徒手抓住子弹\n".encode("gb2312"))
    with pytest.raises(DatasetError) as info:
        read_transcript(path)
    assert "Windows-1252" not in str(info.value)


# --- the shared corpus ---------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "subtitles"
NO_CORPUS = f"the subtitle corpus is not at {CORPUS}"

_ROLLING = "YouTube's rolling captions are read once per spoken line, on purpose (the spec keeps"
_ROLLING += " every repeated line); test_corpus_youtube_files_read_as_spoken checks the words"
_NO_HEADER = "a WebVTT file whose 'WEBVTT' signature is missing or garbled is read with a warning"
_NO_HEADER += " (hand-edited uploads); the spec rejects the whole file"
_LENIENT_TIME = "timestamps with 1- or 2-digit fields are read (SRT files and hand edits have"
_LENIENT_TIME += " them); the spec drops those cues"
_LEGACY = "the spec (WebVTT tests) reads legacy names without ';' (&amp, &not) as HTML does; this"
_LEGACY += " file expects the older vtt.js behaviour (&lt, &gt, &nbsp kept as typed)"

# Files where this parser knowingly differs from what the corpus expects, and why.
KNOWN_DIFFERENCES = {
    "files/wrolpi__example1.en.vtt": _ROLLING,
    "files/webvttpy__subtitles__youtube_dl.vtt": _ROLLING,
    "files/vttjs__file-layout__bom-tab-webvtt.vtt": _NO_HEADER,
    "files/vttjs__file-layout__newline-before-webvtt.vtt": _NO_HEADER,
    "files/vttjs__file-layout__tab-after-bom-before-header.vtt": _NO_HEADER,
    "files/webvttpy__subtitles__invalid.vtt": _NO_HEADER,
    "files/vttjs__cue-times__fraction-digits.vtt": _LENIENT_TIME,
    "files/webvttpy__subtitles__teams_timeframe.vtt": _LENIENT_TIME,
    "files/wpt__wpt-file-parsing__whitespace-chars.vtt": "a vertical tab around a timestamp"
    " counts as a space (as in Python); the spec drops that cue",
    "files/vttjs__cuetext__escape-characters__incorrect.vtt": _LEGACY,
    "files/wpt__wpt-file-parsing__timings-negative.vtt": "a cue that ends before it starts is"
    " refused, naming the line: its text cannot be placed in the audio",
    "files/pysrt__static__windows-1252.srt": "Windows-1252 is refused, named as the likely"
    " encoding, with 'save it as UTF-8': a guessed encoding could garble the training text",
    "files/srt__tests__files__gb2312.srt": "GB2312 without a BOM cannot be told from other"
    " legacy encodings; refused with 'save it as UTF-8'",
}

_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
_TAG_RE = re.compile(r"<[^>\n]*>")
# What must not be left in SRT text: ASS codes, \N / \h, formatting tags.
_SRT_MARKUP_RE = re.compile(r"\{\\|\\[Nnh]|</?(?:i|b|u|s|font)\b", re.IGNORECASE)

Norm = list[tuple[int, int, str]]
# How a known difference shows: cues that differ, or an error where the corpus expects cues.
_DIFFERS = (AssertionError, SubtitleError, DatasetError)


def _manifest() -> list[dict]:
    if not CORPUS.is_dir():
        return []
    lines = (CORPUS / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _expected() -> dict:
    return json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))


ROWS = _manifest()


def _params(rows: list[dict], known: dict[str, str]) -> list:
    """One pytest param per corpus file, id'd by its name; known differences are strict
    xfails (so a fixed one shows up); a lone skip when the corpus is absent."""
    if not CORPUS.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS), id="no-corpus")]
    params = []
    for row in rows:
        marks = []
        if row["file"] in known:
            reason = known[row["file"]]
            marks.append(pytest.mark.xfail(reason=reason, strict=True, raises=_DIFFERS))
        params.append(pytest.param(row, marks=marks, id=row["file"].removeprefix("files/")))
    return params


def _read(rel: str) -> list[Cue]:
    """A corpus file's cues, read as an upload is (raises SubtitleError or DatasetError)."""
    path = CORPUS / rel
    return parse_subtitles(decode_transcript(path.read_bytes(), path.name), path.suffix)


def _clean(text: str) -> str:
    """Each line stripped, blank lines dropped (as run.py compares)."""
    return "\n".join(line.strip() for line in _NEWLINE_RE.split(text) if line.strip())


def _norm(cues: list[tuple[float, float, str]]) -> Norm:
    """(start ms, end ms, text) of the cues with text, in (start, -end) order."""
    out = [(round(start * 1000), round(end * 1000), _clean(text)) for start, end, text in cues]
    return sorted((cue for cue in out if cue[2]), key=lambda cue: (cue[0], -cue[1]))


def _oracle(rel: str, expected: dict) -> Norm | None:
    """The W3C validator's cues for a .vtt file (the spec's parse), None for other files."""
    oracle = expected.get(rel, {}).get("w3c_oracle")
    if oracle is None:
        return None
    return _norm([(cue["start"], cue["end"], cue["text"]) for cue in oracle["cues"]])


def _ours(cues: list[Cue]) -> Norm:
    return _norm([(cue.start, cue.end, cue.text) for cue in cues])


@pytest.fixture(scope="module")
def expected() -> dict:
    return _expected()


@pytest.mark.parametrize("row", _params(ROWS, KNOWN_DIFFERENCES))
def test_corpus_file(row: dict, expected: dict) -> None:
    """`parse`: read, and the spec's cues where the corpus has them; `reject`: refused (an
    error, or no cues: an empty transcript is refused on upload); `reject-or-match`: either."""
    rel, expect = row["file"], row["expect"]
    oracle = _oracle(rel, expected)
    if expect == "parse":
        cues = _read(rel)
    else:
        try:
            cues = _read(rel)
        except (SubtitleError, DatasetError):
            return
        if expect == "reject":
            assert cues == [], f"{rel} should be refused; read {len(cues)} cues"
            return
    if oracle is not None:
        assert _ours(cues) == oracle
    if rel.endswith(".srt"):
        left = [cue.text for cue in cues if _SRT_MARKUP_RE.search(cue.text)]
        assert not left, f"markup left in the text: {left[:3]}"


def _spoken_lines(cues: list[tuple[float, float, str]]) -> list[str]:
    """Every text line in order, a line that repeats the one before it counted once."""
    lines: list[str] = []
    for _, _, text in cues:
        for line in _clean(text).split("\n"):
            if line and (not lines or lines[-1] != line):
                lines.append(line)
    return lines


@pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)
@pytest.mark.parametrize(
    "rel", ["files/wrolpi__example1.en.vtt", "files/webvttpy__subtitles__youtube_dl.vtt"]
)
def test_corpus_youtube_files_read_as_spoken(rel: str, expected: dict) -> None:
    """The words of the spec's cues, each rolled line once; no tiny cues left."""
    spec = expected[rel]["w3c_oracle"]["cues"]
    cues = _read(rel)
    assert _spoken_lines([(c.start, c.end, c.text) for c in cues]) == _spoken_lines(
        [(c["start"], c["end"], c["text"]) for c in spec]
    )
    assert [cue.text.count("\n") for cue in cues] == [0] * len(cues)
    assert all(cue.end - cue.start >= 0.05 for cue in cues)
    assert [cue.start for cue in cues] == sorted(cue.start for cue in cues)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)
def test_corpus_youtube_srt_conversion_reads_like_the_vtt() -> None:
    vtt = _read("files/wrolpi__example1.en.vtt")
    srt = _read("files/wrolpi__example3.en.srt")
    assert [cue.text for cue in srt] == [cue.text for cue in vtt]
    assert [cue.start for cue in srt] == [cue.start for cue in vtt]


@pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)
def test_corpus_unicode_boms_read_like_utf_8() -> None:
    plain = _read("files/pysrt__static__bom-utf-8.srt")
    assert plain
    for name in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        assert _read(f"files/pysrt__static__bom-{name}.srt") == plain, name


@pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)
def test_corpus_windows_1252_is_refused_naming_the_encoding() -> None:
    with pytest.raises(DatasetError, match=r"probably Windows-1252.*save it as UTF-8"):
        read_transcript(CORPUS / "files/pysrt__static__windows-1252.srt")


@pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)
def test_corpus_negative_duration_is_refused_naming_the_line() -> None:
    with pytest.raises(SubtitleError, match=r"line 6: cue ends .* before it starts"):
        _read("files/wpt__wpt-file-parsing__timings-negative.vtt")


@pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)
def test_corpus_capability_tester_keeps_text_and_drops_markup() -> None:
    texts = "\n".join(cue.text for cue in _read("files/pysrt__static__capability_tester.srt"))
    assert "This text should be showed underlined without problems also: 2<3,5>1,4<6" in texts
    assert "hide invalid html tags that are closed and show the text in them" in texts
    assert "but show this: {normal text}" in texts
    assert "{Y:" not in texts and "{\\" not in texts and "\\h" not in texts


# --- cross-check against webvtt-py (a test-only dependency) --------------------------------


def _webvtt_py(text: str) -> Norm:
    """webvtt-py's cues, tags stripped and entities decoded (its raw text keeps both)."""
    webvtt = pytest.importorskip("webvtt")
    try:
        captions = webvtt.WebVTT.from_string(text).captions
    except Exception as exc:  # any failure: webvtt-py cannot read it
        pytest.skip(f"webvtt-py cannot read this file: {type(exc).__name__}")
    cues = [
        (c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.raw_text) for c in captions
    ]
    return _norm(
        [
            (start / 1000, end / 1000, html.unescape(_TAG_RE.sub("", text)))
            for start, end, text in cues
        ]
    )


def _words(cues: Norm) -> list[tuple[int, int, str]]:
    return [(start, end, " ".join(text.split())) for start, end, text in cues]


VTT_ROWS = [
    row
    for row in ROWS
    if row["file"].endswith(".vtt")
    and row["expect"] == "parse"
    and row["file"] not in KNOWN_DIFFERENCES
]


@pytest.mark.parametrize("row", _params(VTT_ROWS, {}))
def test_vtt_agrees_with_webvtt_py(row: dict, expected: dict) -> None:
    """Same cue times, and the same words once tags, entities and spacing are set aside.
    Where webvtt-py departs from the spec's cues (it keeps a tag left open as text), the
    spec decides: test_corpus_file holds this parser to it."""
    rel = row["file"]
    theirs = _webvtt_py((CORPUS / rel).read_bytes().decode("utf-8-sig"))
    oracle = _oracle(rel, expected)
    if oracle is not None and _words(theirs) != _words(oracle):
        pytest.skip("webvtt-py departs from the WebVTT spec's cues here")
    assert _words(_ours(_read(rel))) == _words(theirs)
