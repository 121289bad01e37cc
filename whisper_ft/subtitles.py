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

import html
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

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
# Any WebVTT tag: <v Speaker>, <i>, </b>, <c.class>, <lang en>, inline <00:00:01.000>.
_VTT_TAG_RE = re.compile(r"<[^>\n]*>")
# The formatting tags SRT players understand; other "<...>" text (e.g. "<3") is kept.
_SRT_TAG_RE = re.compile(r"</?(?:i|b|u|s|font)(?:\s[^>]*)?>", re.IGNORECASE)
# ASS/SSA override codes that some SRT files carry, e.g. {\an8} or {\i1}.
_SRT_STYLE_CODE_RE = re.compile(r"\{\\[^{}]*\}")
# HTML character references; the ";" is required so that "AT&T" or "&notes" stay as they are.
_ENTITY_RE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);")
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

    A missing "WEBVTT" header is tolerated (with a warning) when the rest parses.
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
        cues = _parse_blocks(cue_blocks, _clean_vtt_line)
    except SubtitleError as exc:
        if has_header:
            raise
        hint = "; also, the file does not start with 'WEBVTT' (is it a WebVTT file?)"
        raise SubtitleError(exc.reason + hint, exc.line) from None
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
    return _parse_blocks(blocks, _clean_srt_line)


def _split_blocks(text: str) -> list[list[_Line]]:
    """Split text into blocks of non-blank lines (whitespace-only lines count as blank)."""
    blocks: list[list[_Line]] = []
    current: list[_Line] = []
    for number, line in enumerate(_NEWLINE_RE.split(text.removeprefix("\ufeff")), start=1):
        if line.strip():
            current.append((number, line))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _parse_blocks(blocks: list[list[_Line]], clean: Callable[[str], str]) -> list[Cue]:
    """Turn blocks of "[identifier] / timing line / text lines" into cues."""
    cues: list[Cue] = []
    for block in blocks:
        timings = [i for i, (_, line) in enumerate(block) if "-->" in line]
        if not timings or timings[0] > 1:
            raise SubtitleError(
                f"text outside any cue: {block[0][1].strip()!r} (every cue needs a timing line"
                f" like {_TIMING_EXAMPLE}; a blank line inside a cue's text ends the cue)",
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
            lines = (clean(line) for _, line in block[first + 1 : last])
            text = "\n".join(line for line in lines if line)
            if text:
                cues.append(Cue(start, end, text))
            else:
                logger.debug("line %d: dropping cue with no text", number)
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
    end = _parse_timestamp(number, tokens[0], line)
    if end < start:
        raise SubtitleError(
            f"cue ends ({tokens[0]}) before it starts ({left.strip()}); check the timing line",
            number,
        )
    return start, end


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


def _unescape_entities(text: str) -> str:
    return _ENTITY_RE.sub(lambda m: html.unescape(m.group()), text)


def _clean_vtt_line(line: str) -> str:
    return _unescape_entities(_VTT_TAG_RE.sub("", line)).strip()


def _clean_srt_line(line: str) -> str:
    line = _SRT_STYLE_CODE_RE.sub("", _SRT_TAG_RE.sub("", line))
    return _unescape_entities(line).strip()


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


def write_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT text: "WEBVTT", a blank line, then blank-line-separated cues."""
    blocks = _write_blocks(cues, ".", _escape_vtt)
    return "WEBVTT\n\n" + "\n\n".join(blocks) + "\n" if blocks else "WEBVTT\n"


def write_srt(cues: Sequence[Cue]) -> str:
    """SRT text, cues numbered from 1. "-->" in text is written as "->" (SRT cannot escape it)."""
    blocks = _write_blocks(cues, ",", lambda line: _SRT_ARROW_RE.sub("->", line))
    numbered = (f"{number}\n{block}" for number, block in enumerate(blocks, start=1))
    return "\n\n".join(numbered) + "\n" if blocks else ""


def write_txt(cues: Sequence[Cue]) -> str:
    """Plain text: one line per cue (its lines joined with spaces); empty cues are skipped."""
    lines = [" ".join(cue.text.split()) for cue in cues]
    return "".join(f"{line}\n" for line in lines if line)


# --- line wrapping -------------------------------------------------------------------------


def wrap_text(text: str, width: int = 42, max_lines: int = 2) -> str:
    """Re-flow ``text`` into at most ``max_lines`` balanced lines of up to ``width`` characters.

    Uses the fewest lines that fit, splitting at spaces so the lines are as even as possible.
    Text too long for ``max_lines`` lines still gets ``max_lines`` balanced lines, longer than
    ``width``: no words are dropped. Existing line breaks and runs of whitespace are collapsed.
    """
    if width < 1 or max_lines < 1:
        raise ValueError(f"width and max_lines must be at least 1, got {width}, {max_lines}")
    words = text.split()
    for count in range(1, min(max_lines, len(words)) + 1):
        lines = _balanced_lines(words, count, width)
        if lines is not None:
            return "\n".join(lines)
    lines = _balanced_lines(words, min(max_lines, len(words)), math.inf)
    return "\n".join(lines or [])


def _balanced_lines(words: list[str], count: int, limit: float) -> list[str] | None:
    """Split words into exactly ``count`` lines of at most ``limit`` characters, minimising
    the sum of squared line lengths (i.e. as even as possible); None if impossible."""
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
