"""Read and write subtitle text (WebVTT, SRT, plain text).

Subtitles go both ways in this service: predictions are returned as TXT/SRT/VTT, and users
upload training data as audio plus the .vtt/.srt files they corrected by hand. Hand-edited
files are messy (BOMs, CRLF, tags, stray numbering), so the parsers are lenient about cosmetic
things but raise :class:`SubtitleError` naming the line for anything that would silently lose
or misalign training text (bad timestamps, text outside a cue). Cues come back in file order;
ordering and overlap checks are left to the caller.

Everything here is pure (strings in, strings out); file and audio handling lives elsewhere.
"""

from __future__ import annotations

import html.entities
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

from whisper_ft.inputs import check_settings, setting

__all__ = [
    "Cue",
    "SubtitleError",
    "format_timestamp",
    "parse_srt",
    "parse_subtitles",
    "parse_vtt",
    "wrap_text",
    "write_srt",
    "write_txt",
    "write_vtt",
]

logger = logging.getLogger(__name__)

# Line breaks: LF, CRLF and bare CR. (str.splitlines() would also split on U+2028, form
# feeds etc., which can legitimately appear inside cue text.)
_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
# A timestamp, hours optional, "." or "," before 1-3 fraction digits. The sign is captured
# only so that negative times get their own error message.
_TIMESTAMP_RE = re.compile(r"(-)?(?:([0-9]+):)?([0-9]{1,2}):([0-9]{1,2})[.,]([0-9]{1,3})")
# The WebVTT signature line: "WEBVTT" alone or followed by a space/tab and free text.
_VTT_HEADER_RE = re.compile(r"WEBVTT(?:[ \t].*)?")
# WebVTT blocks that carry no cue text (comments, CSS, region definitions).
_VTT_SKIP_BLOCK_RE = re.compile(r"(?:NOTE|STYLE|REGION)(?:[ \t].*)?")
# A complete WebVTT tag on one line: <v Speaker>, <i>, </b>, <c.class>, <lang en>, inline
# <00:00:01.000>.
_VTT_TAG_RE = re.compile(r"<[^>\n]*>")
# A WebVTT tag left open ("<i text", "</c", "&<"): as in the spec, it runs to the next ">", even
# on a later line, or to the end of the cue, and players show none of it. A "<" followed by a
# space and more text on its line ("a < b") is kept as text: a literal "<" is the likelier intent.
_VTT_OPEN_TAG_RE = re.compile(r"<(?:[^\s>]|[^\S\n]*(?:\n|\Z))[^>]*(?:>|\Z)")
# An inline word timestamp (<00:00:01.310>), as in YouTube's auto-captions.
_VTT_WORD_TIME_RE = re.compile(r"<(?:[0-9]+:)?[0-9]{2}:[0-9]{2}\.[0-9]{3}>")
# The formatting tags SRT players understand, also written loosely ("< /  i >"), and one cut
# off at the end of a line ("<font color=red"). Other "<" text (e.g. "2<3", "a < b") is kept.
_SRT_TAG_RE = re.compile(r"<[ \t]*/?[ \t]*(?:[ibus]|font(?:[ \t][^<>\n]*)?)[ \t]*>", re.I)
_SRT_OPEN_TAG_RE = re.compile(r"</?(?:[ibus]|font(?:[ \t][^<>\n]*)?)[ \t]*$", re.I | re.M)
# Any other closed tag, name first ("<wwww>", "</xyz>", "<tag par=5>"): players hide it.
_SRT_OTHER_TAG_RE = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>\n]*)?>")
# ASS/SSA override blocks ({\an8}, {\i1}) and MicroDVD-style codes ({Y:i}, {c:$0000FF}) that
# some SRT files carry; "{normal text}" is kept.
_STYLE_CODE_RE = re.compile(r"\{(?:\\[^{}]*|[A-Za-z]:[^{}]*)\}")
# ASS line breaks in SRT text: \N (forced) and \n (soft); \h is a hard space.
_ASS_BREAK_RE = re.compile(r"\\[Nn]")
_ASS_HARD_SPACE = "\\h"
# HTML character references with their ";", and the legacy names that HTML also reads without
# one ("&amp", "&not") when no letter or digit follows, so that "&notes" stays as it is.
_LEGACY_ENTITIES = sorted((n for n in html.entities.html5 if not n.endswith(";")), key=len)
_ENTITY_RE = re.compile(
    r"&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);"
    rf"|&(?:{'|'.join(reversed(_LEGACY_ENTITIES))})(?![A-Za-z0-9])"
)
# A bare cue number (SRT numbering or a numeric WebVTT identifier).
_NUMBER_RE = re.compile(r"[0-9]+")
# "-->" (or "--->") would end the text and start a timing line; SRT has no escape for it.
_SRT_ARROW_RE = re.compile(r"-{2,}>")

_TIMING_EXAMPLE = "'00:01:02.500 --> 00:01:04.000'"

_Line = tuple[int, str]  # (1-based line number, raw line text)


@dataclass(frozen=True)
class Cue:
    """One subtitle cue; ``text`` may contain "\\n" for multi-line cues."""

    start: float  # seconds
    end: float  # seconds
    text: str
    # (start, end, text) of each spoken word, for karaoke-style output; () when unknown
    words: tuple[tuple[float, float, str], ...] = ()


class SubtitleError(ValueError):
    """A subtitle file cannot be used; the message names the line and the problem."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.reason = reason
        self.line = line


# --- parsing -------------------------------------------------------------------------------


def parse_subtitles(text: str, suffix: str) -> list[Cue]:
    """Parse ``text`` as WebVTT or SRT according to a file suffix (".vtt"/".srt", any case)."""
    kind = suffix.lower()
    if kind == ".vtt":
        return parse_vtt(text)
    if kind == ".srt":
        return parse_srt(text)
    raise ValueError(f"unsupported subtitle file type {suffix!r}; expected '.vtt' or '.srt'")


def parse_vtt(text: str) -> list[Cue]:
    """Parse WebVTT text into cues, in file order. An empty file gives ``[]``.

    A missing "WEBVTT" header is tolerated (with a warning) when the rest parses. YouTube's
    rolling auto-captions are read as what was said, each line once (see `_unroll`).
    """
    blocks = _split_blocks(text)
    if not blocks:
        return []
    has_header = _VTT_HEADER_RE.fullmatch(blocks[0][0][1].strip()) is not None
    if has_header:
        header = blocks.pop(0)
        # Header metadata ("Kind: captions") runs to the first blank line; tolerate a first
        # cue that follows the header without one.
        arrows = [i for i, (_, line) in enumerate(header) if "-->" in line]
        if arrows:
            blocks.insert(0, header[arrows[0] :])
    cue_blocks = []
    for block in blocks:
        if _VTT_SKIP_BLOCK_RE.fullmatch(block[0][1].strip()):
            logger.debug("line %d: skipping %s block", block[0][0], block[0][1].split()[0])
        else:
            cue_blocks.append(block)
    try:
        raw = _parse_blocks(cue_blocks, _clean_vtt_text)
    except SubtitleError as exc:
        if has_header:
            raise
        hint = "; also, the file does not start with 'WEBVTT' (is it a WebVTT file?)"
        raise SubtitleError(exc.reason + hint, exc.line) from None
    cues = _finish_cues(raw, word_times=_VTT_WORD_TIME_RE.search(text) is not None)
    if not has_header:
        logger.warning("WebVTT file has no 'WEBVTT' header line; parsed %d cues anyway", len(cues))
    return cues


def parse_srt(text: str) -> list[Cue]:
    """Parse SRT text into cues, in file order. An empty file gives ``[]``.

    Cue numbers are not checked (missing or out-of-sequence numbers are common and harmless).
    """
    blocks = _split_blocks(text)
    if blocks and _VTT_HEADER_RE.fullmatch(blocks[0][0][1].strip()):
        logger.warning("SRT file starts with 'WEBVTT'; parsing it as WebVTT")
        return parse_vtt(text)
    return _finish_cues(_parse_blocks(blocks, _clean_srt_text), word_times=False)


def _split_blocks(text: str) -> list[list[_Line]]:
    """Split text into blocks of non-blank lines.

    A whitespace-only line counts as blank (hand-edited files often leave spaces on the line
    between cues), except directly after a timing line: YouTube's auto-captions put a line
    holding one space there, and the cue's text follows it.
    """
    blocks: list[list[_Line]] = []
    current: list[_Line] = []
    after_timing = False
    for number, line in enumerate(_NEWLINE_RE.split(text.removeprefix("\ufeff")), start=1):
        if line.strip() or (line and after_timing):
            current.append((number, line))
            after_timing = "-->" in line or (after_timing and not line.strip())
        else:
            if current:
                blocks.append(current)
                current = []
            after_timing = False
    if current:
        blocks.append(current)
    return blocks


@dataclass(frozen=True)
class _RawCue:
    """A cue as read, before empty and repeated cues are dropped."""

    line: int  # the line number of its timing line
    start: float
    end: float
    lines: tuple[str, ...]  # cleaned text lines, none blank


def _parse_blocks(
    blocks: list[list[_Line]], clean: Callable[[list[str]], list[str]]
) -> list[_RawCue]:
    """Turn blocks of "[identifier] / timing line / text lines" into cues (empty ones too)."""
    cues: list[_RawCue] = []
    for block in blocks:
        timings = [i for i, (_, line) in enumerate(block) if "-->" in line]
        if not timings or timings[0] > 1:
            raise SubtitleError(
                f"text outside any cue: {block[0][1].strip()!r} (every cue needs a timing line"
                f" like {_TIMING_EXAMPLE}; a blank line inside a cue's text ends the cue, and so"
                " does a line holding only spaces after the first text line)",
                block[0][0],
            )
        for k, first in enumerate(timings):
            last = timings[k + 1] if k + 1 < len(timings) else len(block)
            if last < len(block):
                # Another cue follows without a blank line; a bare number just before its
                # timing line is that cue's identifier, not text.
                logger.warning("line %d: cue starts without a blank line before it", block[last][0])
                if last - 1 > first and _NUMBER_RE.fullmatch(block[last - 1][1].strip()):
                    last -= 1
            number, timing = block[first]
            start, end = _parse_timing(number, timing)
            text_lines = clean([line for _, line in block[first + 1 : last]])
            cues.append(_RawCue(number, start, end, tuple(text_lines)))
    return cues


def _parse_timing(number: int, line: str) -> tuple[float, float]:
    """Parse "start --> end [settings]" (settings/positions are ignored)."""
    left, _, right = line.partition("-->")
    tokens = right.split()
    if not tokens or "-->" in right:
        raise SubtitleError(
            f"malformed timing line {line.strip()!r}; expected e.g. {_TIMING_EXAMPLE}", number
        )
    start = _parse_timestamp(number, left.strip(), line)
    end = _parse_timestamp(number, _end_time_token(tokens[0]), line)
    if end < start:
        raise SubtitleError(
            f"cue ends ({tokens[0]}) before it starts ({left.strip()}); check the timing line",
            number,
        )
    return start, end


def _end_time_token(token: str) -> str:
    """The end time in the first token after "-->", also when a cue setting follows it with no
    space ("00:01.000line:40%"): WebVTT reads that as the time, then the setting."""
    match = _TIMESTAMP_RE.match(token)
    if match and token[match.end() : match.end() + 1].isalpha():
        return token[: match.end()]
    return token


def _parse_timestamp(number: int, token: str, line: str) -> float:
    match = _TIMESTAMP_RE.fullmatch(token)
    if match is None:
        raise SubtitleError(
            f"malformed timestamp {token!r} in timing line {line.strip()!r};"
            f" expected e.g. {_TIMING_EXAMPLE}",
            number,
        )
    sign, hours, minutes, seconds, fraction = match.groups()
    if sign:
        raise SubtitleError(f"negative time {token!r}; times must be 0 or later", number)
    if int(minutes) >= 60 or int(seconds) >= 60:
        raise SubtitleError(f"minutes and seconds must be below 60 in {token!r}", number)
    millis = (int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)) * 1000
    millis += int(fraction.ljust(3, "0"))
    return millis / 1000  # exact division: "01.234" gives the same float as the literal 1.234


# Cue text: what was said, without markup.


def _text_lines(text: str) -> list[str]:
    """The non-blank lines of ``text``, stripped."""
    return [line.strip() for line in _NEWLINE_RE.split(text) if line.strip()]


def _unescape_entities(text: str) -> str:
    return _ENTITY_RE.sub(lambda m: html.unescape(m.group()), text)


def _clean_vtt_text(lines: list[str]) -> list[str]:
    """A WebVTT cue's lines as spoken: tags (closed or left open, which may span lines)
    removed, character references decoded. Braces are WebVTT text, kept as they are."""
    text = _VTT_OPEN_TAG_RE.sub("", _VTT_TAG_RE.sub("", "\n".join(lines)))
    return _text_lines(_unescape_entities(text))


def _clean_srt_text(lines: list[str]) -> list[str]:
    """An SRT cue's lines as spoken: ASS/MicroDVD codes and tags removed, ASS line breaks
    (\\N, \\n) split the line, hard spaces (\\h) become spaces, references decoded."""
    text = _STYLE_CODE_RE.sub("", "\n".join(lines))
    text = _ASS_BREAK_RE.sub("\n", text).replace(_ASS_HARD_SPACE, " ")
    for tag in (_SRT_TAG_RE, _SRT_OPEN_TAG_RE, _SRT_OTHER_TAG_RE):
        text = tag.sub("", text)
    return _text_lines(_unescape_entities(text))


# Rolling captions and repeats.
#
# YouTube's auto-captions (as yt-dlp writes them, or converted to SRT) roll: each cue shows the
# previous cue's last line above the new one, and a 10 ms cue between two of them repeats the
# text again. Read naively, every line would be trained on two or three times.

# Shorter than this, a cue holds no speech of its own (YouTube's repeats last 10 ms).
_TINY_CUE_SECONDS = 0.05
# Without inline word times, at least this many cues must roll before a file counts as rolling.
_MIN_ROLLING_CUES = 3


def _finish_cues(raw: list[_RawCue], word_times: bool) -> list[Cue]:
    """The cues that have text, in file order. Rolling captions are unrolled first; a tiny cue
    that only repeats the previous cue's text is dropped (it adds no speech)."""
    if _is_rolling(raw, word_times):
        logger.info("rolling (YouTube-style) captions: keeping each line once")
        raw = _unroll(raw)
    cues: list[Cue] = []
    for cue in raw:
        text = "\n".join(cue.lines)
        if not text:
            logger.debug("line %d: dropping cue with no text", cue.line)
        elif cues and _is_tiny(cue) and text == cues[-1].text:
            logger.debug("line %d: dropping a tiny cue that repeats the one before", cue.line)
        else:
            cues.append(Cue(cue.start, cue.end, text))
    return cues


def _is_tiny(cue: _RawCue) -> bool:
    return cue.end - cue.start < _TINY_CUE_SECONDS


def _rolls_on(prev: _RawCue | None, cue: _RawCue) -> bool:
    """Whether ``cue`` starts with the line that ``prev`` ended with (spacing aside)."""
    if prev is None or not prev.lines or not cue.lines:
        return False
    return prev.lines[-1].split() == cue.lines[0].split()


def _is_rolling(raw: list[_RawCue], word_times: bool) -> bool:
    """Whether the cues roll like YouTube's: multi-line cues whose first line repeats the last
    line of the cue before. It must hold for at least half of the multi-line cues, and for
    several of them unless the file also has inline word times (<00:00:01.310>), YouTube's
    other mark; so a normal file that repeats a line in two ordinary cues keeps both."""
    multi = [k for k, cue in enumerate(raw) if len(cue.lines) > 1]
    rolling = sum(_rolls_on(raw[k - 1] if k else None, raw[k]) for k in multi)
    if rolling == 0 or 2 * rolling < len(multi):
        return False
    return word_times or rolling >= _MIN_ROLLING_CUES


def _unroll(raw: list[_RawCue]) -> list[_RawCue]:
    """Each line of rolling captions once: a cue loses a first line that repeats the previous
    cue's last line. Where a conversion to SRT left a cue empty, its words appear in the tiny
    cue right after it; that cue then starts when the empty one did, when they were said."""
    unrolled = []
    for k, cue in enumerate(raw):
        prev = raw[k - 1] if k else None
        lines = cue.lines[1:] if _rolls_on(prev, cue) else cue.lines
        start = prev.start if lines and _said_in_empty_cue(prev, cue) else cue.start
        unrolled.append(_RawCue(cue.line, start, cue.end, lines))
    return unrolled


def _said_in_empty_cue(prev: _RawCue | None, cue: _RawCue) -> bool:
    """Whether tiny ``cue`` directly follows an empty ``prev`` (whose words it shows)."""
    if prev is None or prev.lines or not _is_tiny(cue):
        return False
    return abs(cue.start - prev.end) < _TINY_CUE_SECONDS


# --- writing -------------------------------------------------------------------------------


def format_timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = True) -> str:
    """Format seconds as "HH:MM:SS.mmm", rounded half-up to whole milliseconds.

    ``decimal`` is "." (WebVTT) or "," (SRT). With ``always_hours=False`` the hours are left
    out below one hour ("MM:SS.mmm").
    """
    if decimal not in (".", ","):
        raise ValueError(f"decimal must be '.' or ',', not {decimal!r}")
    return _format_millis(_to_millis(seconds), decimal, always_hours)


def _to_millis(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"subtitle times must be finite and not negative, got {seconds!r}")
    # Decimal(repr()) rounds the number as written, so 1.0005 -> 1.001 despite binary floats.
    exact = Decimal(repr(float(seconds))) * 1000
    return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


def _format_millis(millis: int, decimal: str, always_hours: bool) -> str:
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    clock = f"{minutes:02d}:{secs:02d}{decimal}{ms:03d}"
    return f"{hours:02d}:{clock}" if hours or always_hours else clock


def _cue_lines(cue: Cue) -> list[str]:
    """The cue's non-blank text lines, stripped (a blank line would end the cue)."""
    return [line.strip() for line in _NEWLINE_RE.split(cue.text) if line.strip()]


def _cue_millis(index: int, cue: Cue) -> tuple[int, int]:
    start, end = _to_millis(cue.start), _to_millis(cue.end)
    if end < start:
        raise ValueError(f"cue {index} ends ({cue.end}) before it starts ({cue.start})")
    return start, end


def _write_blocks(cues: Sequence[Cue], decimal: str, escape: Callable[[str], str]) -> list[str]:
    """One "timing\\ntext" block per cue; cues without text are left out."""
    blocks = []
    for index, cue in enumerate(cues):
        start, end = _cue_millis(index, cue)
        lines = _cue_lines(cue)
        if not lines:
            logger.debug("cue %d has no text; not written", index)
            continue
        timing = f"{_format_millis(start, decimal, True)} --> {_format_millis(end, decimal, True)}"
        blocks.append("\n".join([timing, *map(escape, lines)]))
    return blocks


def _escape_vtt(line: str) -> str:
    # Escaping ">" also turns any "-->" in the text into "--&gt;".
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_vtt(cues: Sequence[Cue], highlight_words: bool = False, note: str = "") -> str:
    """WebVTT text: "WEBVTT", a blank line, then blank-line-separated cues.

    `highlight_words`: each word of a cue that has `words` is preceded by a WebVTT timestamp
    tag (`<00:00:01.250>word`), which players use for karaoke-style highlighting. `note`: a
    NOTE block after the header (e.g. how the cues were timed)."""
    if highlight_words:
        cues = [replace(c, text=_karaoke_vtt(c)) if c.words else c for c in cues]
        escape = _escape_vtt_text
    else:
        escape = _escape_vtt
    blocks = _write_blocks(cues, ".", escape)
    if note:
        blocks.insert(0, "NOTE " + " ".join(note.replace("-->", "->").split()))
    return "WEBVTT\n\n" + "\n\n".join(blocks) + "\n" if blocks else "WEBVTT\n"


def write_srt(cues: Sequence[Cue], highlight_words: bool = False) -> str:
    """SRT text, cues numbered from 1. "-->" in text is written as "->" (SRT cannot escape it).

    `highlight_words`: a cue that has `words` becomes one cue per word, the cue's text with
    that word underlined (`<u>word</u>`), as openai-whisper and whisperX write it."""
    if highlight_words:
        cues = [part for c in cues for part in (_karaoke_srt(c) if c.words else [c])]
    blocks = _write_blocks(cues, ",", lambda line: _SRT_ARROW_RE.sub("->", line))
    numbered = (f"{number}\n{block}" for number, block in enumerate(blocks, start=1))
    return "\n\n".join(numbered) + "\n" if blocks else ""


_TAG_MARK = "\x00"  # stands for "<" of a tag we write, until the text around it is escaped


def _escape_vtt_text(line: str) -> str:
    """Escape text, keeping the timestamp tags `_karaoke_vtt` marked."""
    return _escape_vtt(line).replace(_TAG_MARK, "<").replace("\x01", ">")


def _word_lines(cue: Cue) -> list[list[int]]:
    """Indices into cue.words of the words on each of the cue's lines."""
    lines, k = [], 0
    for line in _cue_lines(cue):
        count = len(line.split())
        lines.append(list(range(k, min(k + count, len(cue.words)))))
        k += count
    return lines


def _karaoke_vtt(cue: Cue) -> str:
    lines, last = [], _to_millis(cue.start)
    for indices in _word_lines(cue):
        parts = []
        for k in indices:
            text = cue.words[k][2]
            millis = max(_to_millis(cue.words[k][0]), last + 1)
            if k > 0 and millis < _to_millis(cue.end):  # tags must fall inside the cue
                text = f"{_TAG_MARK}{_format_millis(millis, '.', True)}\x01{text}"
                last = millis
            parts.append(text)
        lines.append(" ".join(parts))
    return "\n".join(lines)


def _karaoke_srt(cue: Cue) -> list[Cue]:
    lines = _word_lines(cue)
    starts = [cue.start] + [max(w[0], cue.start) for w in cue.words[1:]] + [cue.end]
    parts = []
    for k in range(len(cue.words)):
        start, end = max(starts[: k + 1]), min(max(starts[k + 1], cue.start), cue.end)
        if end <= start:
            continue
        text = "\n".join(
            " ".join(f"<u>{cue.words[i][2]}</u>" if i == k else cue.words[i][2] for i in line)
            for line in lines
        )
        parts.append(Cue(start, end, text))
    return parts


def write_txt(cues: Sequence[Cue]) -> str:
    """Plain text: one line per cue (its lines joined with spaces); empty cues are skipped."""
    lines = [" ".join(cue.text.split()) for cue in cues]
    return "".join(f"{line}\n" for line in lines if line)


# --- what a readable cue is ----------------------------------------------------------------
#
# The one home of the subtitle rules ("two lines of 42 characters" and the rest): the cue
# builder, the line wrapper and the transcriber's segments all read them from here.


@dataclass(frozen=True)
class CueRules:
    """What a readable cue is. Defaults: Netflix's English timed-text style guide."""

    max_line_width: int = setting(42, ge=1, le=200)  # characters on a line
    max_line_count: int = setting(2, ge=1, le=10)  # lines on screen at once
    max_cue_seconds: float = setting(7.0, ge=1.0, le=60.0)  # longest time on screen
    max_words_per_cue: int = setting(0, ge=0, le=100)  # 0: no limit
    min_cue_seconds: float = 5 / 6  # shortest time on screen (20 frames), where speech allows
    max_chars_per_second: float = 20.0  # reading speed, spaces and punctuation counted
    gap_seconds: float = 2 / 24  # blank time between two cues (two frames)

    def validate(self) -> CueRules:
        check_settings(self)
        return self

    @property
    def max_chars(self) -> int:
        return self.max_line_width * self.max_line_count


NETFLIX_ENGLISH = CueRules()


# --- line wrapping -------------------------------------------------------------------------

_LINE_BREAK_WEIGHT = 40.0  # a break_cost of 20 (after "the") outweighs lines 42/20 vs 31/31


def wrap_text(
    text: str,
    width: int = NETFLIX_ENGLISH.max_line_width,
    max_lines: int = NETFLIX_ENGLISH.max_line_count,
    penalties: Sequence[float] = (),
) -> str:
    """Re-flow ``text`` into at most ``max_lines`` balanced lines of up to ``width`` characters.

    Uses the fewest lines that fit, splitting at spaces so the lines are as even as possible
    and, given ``penalties`` (per word, the `break_cost` of a line starting there), away from
    bad places to break. Text too long for ``max_lines`` lines still gets ``max_lines``
    balanced lines, longer than ``width``: no words are dropped. Existing line breaks and runs
    of whitespace are collapsed.
    """
    if width < 1 or max_lines < 1:
        raise ValueError(f"width and max_lines must be at least 1, got {width}, {max_lines}")
    words = text.split()
    penalties = penalties if len(penalties) == len(words) else ()
    for count in range(1, min(max_lines, len(words)) + 1):
        lines = _balanced_lines(words, count, width, penalties)
        if lines is not None:
            return "\n".join(lines)
    lines = _balanced_lines(words, min(max_lines, len(words)), math.inf, penalties)
    return "\n".join(lines or [])


def _balanced_lines(
    words: list[str], count: int, limit: float, penalties: Sequence[float] = ()
) -> list[str] | None:
    """Split words into exactly ``count`` lines of at most ``limit`` characters, minimising
    the sum of squared line lengths (i.e. as even as possible) plus, for a line that ends
    before word k, ``penalties[k]`` (a `break_cost`) in units of a few characters squared;
    None if impossible."""
    if not words:
        return []
    total = len(words)
    prefix = [0]
    for word in words:
        prefix.append(prefix[-1] + len(word))

    def length(i: int, j: int) -> int:  # words[i:j] joined by single spaces
        return prefix[j] - prefix[i] + (j - i - 1)

    # best[c][j]: (cost, split point) for words[:j] in c lines; only reachable j are stored.
    best: list[dict[int, tuple[float, int]]] = [{0: (0.0, 0)}]
    for lines in range(1, count + 1):
        ends = [total] if lines == count else range(lines, total - (count - lines) + 1)
        row: dict[int, tuple[float, int]] = {}
        for j in ends:
            for i, (cost, _) in best[-1].items():
                if i < j and length(i, j) <= limit:
                    candidate = cost + length(i, j) ** 2
                    if penalties and j < total:
                        candidate += _LINE_BREAK_WEIGHT * penalties[j]
                    if j not in row or candidate < row[j][0]:
                        row[j] = (candidate, i)
        best.append(row)
    if total not in best[count]:
        return None
    lines_out, j = [], total
    for lines in range(count, 0, -1):
        i = best[lines][j][1]
        lines_out.append(" ".join(words[i:j]))
        j = i
    return lines_out[::-1]


# --- cues from timed words -----------------------------------------------------------------
#
# Every transcription path (short or long audio, sequential or batched, VAD, translation)
# ends here: its timed words become cues that a viewer can read. The rules (CueRules, above)
# default to Netflix's English timed-text guide; the user may set the width, lines, duration
# and words.


@dataclass(frozen=True)
class TimedWord:
    """A word with its spoken time; `text` has no surrounding spaces."""

    start: float
    end: float
    text: str


# Words after which a line or cue should not end: articles, prepositions, conjunctions,
# possessives and titles belong with the word that follows (English, and the commonest of
# French, Spanish, German and Italian).
_BINDING_WORDS = frozenset(
    "a an the of to in on at by for with from into onto upon about over under as and or "  # noqa: SIM905
    "but nor if than that my your his her its our their this these those i not very mr "
    "mrs ms dr st le la les un une des du de au aux et el los las y del en der die das "
    "ein eine und zu von mit il lo gli".split()
)
_ABBREVIATIONS = frozenset("mr. mrs. ms. dr. st. vs. etc. e.g. i.e. no. jr. sr.".split())  # noqa: SIM905
_SENTENCE_END_RE = re.compile(r"[.?!。？！…][\"'”’)\]]*$")
_CLAUSE_END_RE = re.compile(r"[,;:–—][\"'”’)\]]*$|-$")
_NUMBER_UNITS = frozenset("% percent per cent million billion thousand hundred".split())  # noqa: SIM905
PAUSE_BREAK_SECONDS = 0.3  # a silence this long between words is a natural place to break

# Costs of ending a cue (or a line) between two words: lower is a better place.
_COST_SENTENCE, _COST_CLAUSE, _COST_PAUSE, _COST_PLAIN = 0.0, 2.0, 3.0, 6.0
_COST_BINDING = 20.0  # after an article, a preposition, ...: almost never
_COST_NUMBER = 20.0  # inside a number ("8 x 7", "10 percent")
_COST_NAME = 8.0  # between two capitalised words ("Edgar Allan", "New York")
_COST_CUE = 1.0  # each cue: fewer, fuller cues when nothing else decides
_COST_SENTENCES_JOINED = 1.0  # each sentence end inside a cue: one sentence a cue, preferably
_COST_TOO_FAST = 10.0  # a cue read faster than the rule allows (plus its excess)
_COST_TOO_SHORT = 10.0  # a cue on screen less than the minimum


def is_sentence_end(word: str) -> bool:
    return bool(_SENTENCE_END_RE.search(word)) and word.lower() not in _ABBREVIATIONS


def break_cost(before: TimedWord, after: TimedWord) -> float:
    """How bad a place to end a cue or a line, between `before` and `after`."""
    if is_sentence_end(before.text):
        return _COST_SENTENCE
    if _CLAUSE_END_RE.search(before.text):
        cost = _COST_CLAUSE
    elif after.start - before.end >= PAUSE_BREAK_SECONDS:
        cost = _COST_PAUSE
    else:
        cost = _COST_PLAIN
    bare = before.text.lower().strip("\"'“‘(")
    if bare in _BINDING_WORDS:
        cost += _COST_BINDING
    if any(c.isdigit() for c in before.text) and (
        after.text[:1].isdigit() or after.text.lower().strip(".,") in _NUMBER_UNITS
    ):
        cost += _COST_NUMBER
    if before.text[:1].isupper() and after.text[:1].isupper() and bare != "i":
        cost += _COST_NAME
    return cost


def lines_needed(lengths: Sequence[int], width: int) -> int:
    """Fewest lines of at most `width` characters holding words of these lengths in order
    (filling each line greedily is optimal); a word longer than `width` gets a line alone."""
    lines, used = 0, 0
    for length in lengths:
        if lines and used + 1 + length <= width:
            used += 1 + length
        else:
            lines, used = lines + 1, length
    return lines


def group_words(
    words: Sequence[TimedWord], rules: CueRules = NETFLIX_ENGLISH, end_of_audio: float | None = None
) -> list[list[TimedWord]]:
    """Split timed words into cues: the split with the lowest total cost (dynamic
    programming) among those whose every cue fits the width, lines, duration and word
    limits. A cue costs more when it is read too fast or shown too briefly (counting the
    pause after it that it may extend into), and each break costs what `break_cost` says."""
    rules = rules.validate()
    n = len(words)
    if n == 0:
        return []
    last_end = words[-1].end if end_of_audio is None else max(end_of_audio, words[-1].end)
    breaks = [0.0] + [break_cost(words[k - 1], words[k]) for k in range(1, n)]
    best = [0.0] + [math.inf] * n  # best[j]: lowest cost of cues covering words[:j]
    choice = [0] * (n + 1)
    for j in range(1, n + 1):
        next_start = words[j].start if j < n else last_end + 1.0
        chars = -1
        for i in range(j - 1, -1, -1):  # the cue words[i:j], growing backwards
            chars += len(words[i].text) + 1
            single = i == j - 1  # one word always makes a cue, whatever its size
            if not single and (
                chars > rules.max_chars
                or words[j - 1].end - words[i].start > rules.max_cue_seconds
                or (rules.max_words_per_cue and j - i > rules.max_words_per_cue)
                or (
                    chars > rules.max_line_width
                    and _lines(words[i:j], rules) > rules.max_line_count
                )
            ):
                break
            cost = best[i] + breaks[i] + _cue_cost(words[i:j], chars, next_start, rules)
            if chars > rules.max_line_width:  # the best place to break its lines
                cost += _line_break_cost(words, breaks, i, j, rules.max_line_width)
            if cost < best[j]:
                best[j], choice[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(list(words[choice[j] : j]))
        j = choice[j]
    return groups[::-1]


def _line_break_cost(words, breaks, i: int, j: int, width: int) -> float:
    """The lowest break cost at which words[i:j] split into two lines that fit (0 when
    they need more than two: their wrapping decides)."""
    total = sum(len(w.text) for w in words[i:j]) + (j - i - 1)
    first, lowest = -1, math.inf
    for k in range(i + 1, j):  # the second line starts at words[k]
        first += len(words[k - 1].text) + 1
        if first <= width and total - first - 1 <= width:
            lowest = min(lowest, breaks[k])
    return 0.0 if lowest == math.inf else lowest


def _lines(words: Sequence[TimedWord], rules: CueRules) -> int:
    return lines_needed([len(w.text) for w in words], rules.max_line_width)


def _cue_cost(words: Sequence[TimedWord], chars: int, next_start: float, rules) -> float:
    start = words[0].start
    shown = _display_end(start, words[-1].end, chars, next_start, rules) - start
    cost = _COST_CUE + _COST_SENTENCES_JOINED * sum(is_sentence_end(w.text) for w in words[:-1])
    if shown <= 0 or chars / shown > rules.max_chars_per_second:
        speed = chars / max(shown, 1e-3)
        cost += _COST_TOO_FAST * (1.0 + speed / rules.max_chars_per_second)
    if shown < rules.min_cue_seconds:
        cost += _COST_TOO_SHORT
    return cost


def _display_end(start: float, spoken_end: float, chars: int, next_start: float, rules) -> float:
    """When a cue leaves the screen: once it has been read (and shown the minimum time), at
    the earliest when its last word ends; a gap before the next cue; never past the maximum."""
    wanted = max(
        spoken_end, start + rules.min_cue_seconds, start + chars / rules.max_chars_per_second
    )
    latest = min(next_start - rules.gap_seconds, start + rules.max_cue_seconds)
    if latest > start:  # the last word may lose up to a gap's time to the next cue
        return min(wanted, latest)
    return max(start, min(spoken_end, next_start))  # no room for a gap: until the next cue


def build_cues(
    words: Sequence[TimedWord], rules: CueRules = NETFLIX_ENGLISH, end_of_audio: float | None = None
) -> list[Cue]:
    """Readable cues from timed words: grouped by `group_words`, each wrapped into balanced
    lines that do not end on a bad break, shown from its first word until it has been read,
    a small gap before the next. `Cue.words` keeps the words for karaoke-style output."""
    words = _ordered(words)
    groups = group_words(words, rules, end_of_audio)
    last_end = words[-1].end if words else 0.0
    if end_of_audio is not None:
        last_end = max(last_end, end_of_audio)
    cues = []
    for k, group in enumerate(groups):
        text = _wrap_words(group, rules)
        chars = len(text.replace("\n", " "))
        next_start = groups[k + 1][0].start if k + 1 < len(groups) else last_end + rules.gap_seconds
        start = group[0].start
        end = _display_end(start, group[-1].end, chars, next_start, rules)
        timed = tuple((w.start, w.end, w.text) for w in group)
        # Whole milliseconds, the end rounded up: a cue shown the minimum stays up the minimum.
        end = math.ceil(round(end * 1000, 6)) / 1000
        cues.append(Cue(round(start, 3), end, text, timed))
    return cues


def _ordered(words: Sequence[TimedWord]) -> list[TimedWord]:
    """Words with text, in time order, each ending no earlier than it starts."""
    out: list[TimedWord] = []
    for w in words:
        for text in w.text.split():  # a "word" holding a space becomes two, same times
            start = max(w.start, out[-1].start if out else 0.0)
            out.append(TimedWord(start, max(w.end, start), text))
    return out


def _wrap_words(group: Sequence[TimedWord], rules: CueRules) -> str:
    penalties = [0.0] + [break_cost(group[k - 1], group[k]) for k in range(1, len(group))]
    text = " ".join(w.text for w in group)
    return wrap_text(text, rules.max_line_width, rules.max_line_count, penalties)


def words_from_text(start: float, end: float, text: str) -> list[TimedWord]:
    """Words of a segment that carries no word timing, timed in proportion to their place
    in the text (an estimate: the output says so)."""
    tokens = text.split()
    total = sum(len(t) + 1 for t in tokens) or 1
    words, done = [], 0
    for token in tokens:
        begin = start + (end - start) * done / total
        done += len(token) + 1
        words.append(TimedWord(begin, start + (end - start) * (done - 1) / total, token))
    return words


def rule_breaks(cues: Sequence[Cue], rules: CueRules = NETFLIX_ENGLISH) -> list[set[str]]:
    """For each cue, the rules it breaks: "width", "lines", "too_long", "too_short",
    "too_fast", "words", "overlap" (it runs into the next cue)."""
    found = []
    for k, cue in enumerate(cues):
        lines = _cue_lines(cue)
        chars = len(" ".join(lines))
        shown = cue.end - cue.start
        broken = set()
        if any(len(line) > rules.max_line_width for line in lines):
            broken.add("width")
        if len(lines) > rules.max_line_count:
            broken.add("lines")
        if shown > rules.max_cue_seconds + 1e-3:
            broken.add("too_long")
        if shown < rules.min_cue_seconds - 1e-3:
            broken.add("too_short")
        if shown <= 0 or chars / shown > rules.max_chars_per_second + 1e-6:
            broken.add("too_fast")
        if rules.max_words_per_cue and len(" ".join(lines).split()) > rules.max_words_per_cue:
            broken.add("words")
        if k + 1 < len(cues) and cue.end > cues[k + 1].start + 1e-3:
            broken.add("overlap")
        found.append(broken)
    return found
