"""Turn the uploaded training zip into checked, <=30 s training windows and a validation split.

The zip comes from a user, so it is treated as hostile until checked: every entry is vetted
(no absolute paths, no `..`, no symlinks, size and compression-ratio limits against zip bombs)
before anything is written, and extraction counts the bytes it writes so a lying header cannot
fill the disk. The content is then checked as a whole, and every problem found (unpaired
files, bad timestamps, audio that does not decode, cues past the end of the audio ...) is
reported in one message naming the file and what to fix, so the user fixes the zip once and
not once per error. With `skip_bad` those files are left out with a warning instead.

Layout accepted: audio files next to transcripts with the same name, in any folder
(`talk1.mp3` + `talk1.vtt`; `.srt` too; a `.txt` for a clip of at most 30 s). This is also
exactly what the prediction `task=dataset` export writes (`<stem>_0001.wav` + `.vtt`).

Whisper sees 30 s of audio at a time, so each recording is cut into windows of at most 30 s
that keep whole cues: a cue cut in two would teach the model words that are not in the audio.
Recordings are decoded once to raw samples on disk under the work folder, and windows are
spans of those files read when used, so a dataset of many hours holds little memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol, TypeVar

import numpy as np

from whisper_ft.audio import (
    CHUNK_LENGTH,
    N_SAMPLES,
    SAMPLE_RATE,
    SILENT_PEAK,
    AudioError,
    stream_audio,
)
from whisper_ft.fetch import TooLarge, download
from whisper_ft.subtitles import Cue, SubtitleError, format_timestamp, parse_subtitles

__all__ = [
    "AudioSpan",
    "Dataset",
    "DatasetError",
    "DatasetLimits",
    "Example",
    "fetch_zip",
    "find_pairs",
    "load_dataset",
    "pack_spans",
    "read_transcript",
    "safe_extract",
    "samples",
    "windows",
]

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset(
    [".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".webm", ".mp4", ".mkv", ".mov"]
)
TRANSCRIPT_SUFFIXES = frozenset([".vtt", ".srt", ".txt"])  # .txt: one text, no times
IGNORED_NAMES = frozenset(["__MACOSX", "Thumbs.db", "desktop.ini"])  # OS clutter in zips

PAD_SECONDS = 0.2  # audio kept before the first and after the last cue of a window
END_TOLERANCE = 0.5  # a cue may end this far past the decoded audio (encoder padding, rounding)
OVERLAP_TOLERANCE = 0.1  # cue overlaps up to this are clamped; larger ones are an error
MAX_PROBLEMS_PER_FILE = 5  # a file with 500 shifted cues gets 5 lines, then "and 495 more"
COPY_BLOCK = 1024 * 1024  # extraction copies 1 MiB at a time, counting as it goes

_DRIVE_RE = re.compile(r"[A-Za-z]:")  # "C:" at the start of a Windows path
_LAYOUT = (
    "put each audio file next to a transcript with the same name, in any folder, e.g. "
    "talk1.mp3 + talk1.vtt (or talk1.srt; a talk1.txt works for a clip of at most 30 s)"
)
_SKIP_HINT = "fix these and upload the zip again, or set skip_bad_files to leave them out"


class DatasetError(ValueError):
    """The training data cannot be used; the message lists every problem and what to fix."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


def _fail(summary: str, problems: list[str], hint: str = "") -> DatasetError:
    lines = [f"{summary}:", *(f"  - {p}" for p in problems)]
    if hint:
        lines.append(hint)
    return DatasetError("\n".join(lines), problems)


@dataclass(frozen=True)
class DatasetLimits:
    max_files: int = 50_000  # files in a zip (folders and OS clutter such as __MACOSX not counted)
    max_unpacked_bytes: int = 20 * 1024**3  # all files of a zip unpacked together
    max_ratio: float = 200.0  # unpacked/compressed, per entry and overall (zip bombs)
    ratio_min_bytes: int = 1024**2  # the ratio check applies above this size: tiny files are
    # harmless whatever their ratio (a 3 s silent WAV deflates ~1000:1)
    max_recording_seconds: float = 4 * 3600  # one audio file
    max_total_seconds: float = 100 * 3600  # all audio files together (all the zips)


class AudioSpan:
    """Samples of a decoded recording that stay on disk until used.

    A recording is decoded once, block by block, to a file of raw 16 kHz float32 samples;
    windows and sentences are spans of that file, read when a batch is built. So the memory
    a dataset holds does not grow with its hours: only the batch in hand is in memory. A span
    reads as a numpy array (`np.asarray(span)`), slices to a span, and has `size`."""

    __slots__ = ("path", "lo", "hi")
    dtype = np.dtype(np.float32)
    ndim = 1

    def __init__(self, path: Path, lo: int, hi: int):
        self.path, self.lo, self.hi = path, lo, hi

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice) -> AudioSpan:
        start, stop, step = part.indices(self.size)
        if step != 1:
            raise ValueError("an AudioSpan slices with step 1 only")
        return AudioSpan(self.path, self.lo + start, self.lo + max(start, stop))

    def copy(self) -> AudioSpan:
        return self  # read-only: a span is its own copy

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        samples = np.fromfile(self.path, dtype=np.float32, count=self.size, offset=self.lo * 4)
        return samples if dtype is None else samples.astype(dtype)


def samples(audio: np.ndarray | AudioSpan) -> np.ndarray:
    """The samples of an example's audio as a float32 array (read from disk for a span)."""
    return np.asarray(audio, dtype=np.float32)


def decode_to_file(audio_path: Path, out: Path, max_seconds: float) -> tuple[AudioSpan, float]:
    """Decode a recording block by block to raw float32 samples in `out`; the whole
    recording as a span, and its peak level. Memory holds one block at a time."""
    peak, total = 0.0, 0
    with open(out, "wb") as f:
        for block in stream_audio(audio_path, max_duration=max_seconds):
            block.astype(np.float32, copy=False).tofile(f)
            peak = max(peak, float(np.abs(block).max()))
            total += block.size
    return AudioSpan(out, 0, total), peak


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity (holds an array)
class Example:
    audio: np.ndarray | AudioSpan  # 16 kHz mono float32, at most 30 s (samples() reads it)
    text: str  # the window's cue texts, each on one line, joined with spaces
    cues: tuple[Cue, ...]  # times relative to the window start; () for a .txt clip (no times)
    recording: str  # relative path of the source audio inside the zip
    start: float  # window start in the recording, seconds


@dataclass
class Dataset:
    train: list[Example]
    validation: list[Example]
    recordings: int  # recordings used (train zip and validation zip)
    seconds: float  # total audio seconds of all windows
    warnings: list[str]


# --- safe extraction -----------------------------------------------------------------------


def _ignored(parts: tuple[str, ...]) -> bool:
    """OS clutter and hidden files: __MACOSX/, .DS_Store, ._talk1.mp3, .git/ ..."""
    return any(p.startswith(".") or p in IGNORED_NAMES for p in parts)


def _entry_parts(info: zipfile.ZipInfo) -> tuple[tuple[str, ...] | None, str]:
    """The entry's path components, or None and why the entry is unsafe."""
    # Some Windows tools write "\" as the separator; treat it as one so "..\x" is caught too.
    # NFC: macOS writes decomposed accents, so "café.mp3" and "café.vtt" would not pair.
    name = unicodedata.normalize("NFC", info.filename.replace("\\", "/"))
    if name.startswith("/") or _DRIVE_RE.match(name):
        return None, "absolute path"
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None, "'..' leads outside the folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return None, "symbolic link"
    return parts, ""


def fetch_zip(spec: str | os.PathLike, dest: Path, input_name: str, max_bytes: int) -> Path:
    """A dataset zip named by a local path, or by an http(s) URL downloaded to `dest`."""
    text = str(spec)
    if not text.startswith(("http://", "https://")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise DatasetError(f"{input_name}: no such file: {path}")
        return path
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = download(text, dest, max_bytes)
    except TooLarge as e:
        raise DatasetError(
            f"{input_name}: {text} is larger than {_size(max_bytes)}, the limit "
            "(max_unpacked_gb); split the data into several zips or raise the limit"
        ) from e
    except OSError as e:
        raise DatasetError(
            f"{input_name}: cannot download {text} ({e}); check the URL and that this machine "
            "can reach it"
        ) from e
    logger.info("%s: downloaded %s (%s)", input_name, text, _size(written))
    return dest


def safe_extract(zip_path: Path, dest: Path, limits: DatasetLimits = DatasetLimits()) -> Path:
    """Extract the zip's files into `dest` (created if needed) and return `dest`.

    Every entry is checked before anything is written. Folders, hidden files and OS clutter
    (`__MACOSX/`, `.DS_Store`) are skipped. Raises DatasetError for anything that is not a
    zip, an empty zip, unsafe entries and entries over `limits`; on an error during the copy,
    `dest` may hold part of the files (callers extract into a fresh folder they remove).
    """
    zip_path = Path(zip_path)
    name = zip_path.name
    if not zip_path.is_file() or not zipfile.is_zipfile(zip_path):
        raise DatasetError(
            f"{name}: not a zip file; upload a .zip of audio files with their transcripts ("
            f"{_LAYOUT})"
        )
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _check_members(zf, name, limits)
            _extract_members(zf, members, Path(dest), limits)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{name}: the zip is corrupt ({e}); create it again") from e
    return Path(dest)


def _check_members(
    zf: zipfile.ZipFile, name: str, limits: DatasetLimits
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The files to extract, with their path components. Raises DatasetError for unsafe
    entries, a zip with no files, and too many files or bytes for `limits`."""
    unsafe, members = [], []
    for info in zf.infolist():
        parts, why = _entry_parts(info)
        if parts is None:
            unsafe.append(f"{info.filename!r}: {why}")
        elif parts and not info.is_dir() and not _ignored(parts):
            members.append((info, parts))
    if unsafe:
        raise _fail(
            f"{name}: the zip has unsafe entries and was not extracted",
            unsafe,
            "zip the files again from their folder, without links or paths outside it",
        )
    if not members:
        raise DatasetError(
            f"{name}: the zip is empty (no files apart from folders and hidden files); {_LAYOUT}"
        )
    if len(members) > limits.max_files:
        raise DatasetError(
            f"{name}: the zip has {len(members)} files, more than the limit of "
            f"{limits.max_files}; train on fewer files, or join short clips into longer "
            "recordings with one .vtt each"
        )
    too_big = _size_problems(members, limits)
    if too_big:
        raise _fail(
            f"{name}: the zip unpacks to too much data (limit {_size(limits.max_unpacked_bytes)}"
            f", at most {limits.max_ratio:.0f}:1 compression; a zip bomb?)",
            too_big,
            "upload less audio, or compress the audio itself (FLAC or MP3) instead of zipping "
            "long stretches of digital silence",
        )
    return members


def _size_problems(
    members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], limits: DatasetLimits
) -> list[str]:
    """Entries, and the zip as a whole, that unpack past the limits (size or ratio)."""
    too_big = []
    for info, _ in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.max_unpacked_bytes:
            too_big.append(f"{info.filename}: unpacks to {_size(info.file_size)}")
        elif info.file_size > limits.ratio_min_bytes and ratio > limits.max_ratio:
            too_big.append(
                f"{info.filename}: compressed {ratio:.0f}:1 ({_size(info.compress_size)} unpacks "
                f"to {_size(info.file_size)}), more than {limits.max_ratio:.0f}:1"
            )
    total = sum(info.file_size for info, _ in members)
    packed = sum(info.compress_size for info, _ in members)
    if total > limits.max_unpacked_bytes:
        too_big.append(f"all files together unpack to {_size(total)}")
    elif total > limits.ratio_min_bytes and total / max(packed, 1) > limits.max_ratio:
        too_big.append(f"all files together are compressed {total / max(packed, 1):.0f}:1")
    return too_big


def _extract_members(
    zf: zipfile.ZipFile,
    members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
    dest: Path,
    limits: DatasetLimits,
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written_total = 0
    for info, parts in members:
        target = root.joinpath(*parts)
        # Belt and braces: `..` and absolute paths were refused above, but a folder that
        # already existed in dest could be a link pointing elsewhere.
        if not target.parent.resolve().is_relative_to(root):
            raise DatasetError(f"{info.filename}: would be written outside {dest}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "xb") as dst:
                written = 0
                while block := src.read(COPY_BLOCK):
                    written += len(block)
                    written_total += len(block)
                    if written > info.file_size or written_total > limits.max_unpacked_bytes:
                        raise DatasetError(
                            f"{info.filename}: unpacks to more than its header says or past "
                            f"the limit of {_size(limits.max_unpacked_bytes)} (corrupt or "
                            "malicious zip); create the zip again"
                        )
                    dst.write(block)
        except FileExistsError as e:
            raise DatasetError(
                f"{info.filename}: the zip holds this name twice (two files, or a file and a "
                "folder); keep one"
            ) from e
        except RuntimeError as e:  # zipfile: "File ... is encrypted, password required"
            raise DatasetError(
                f"{info.filename}: {e}; create the zip again without a password"
            ) from e
        except NotImplementedError as e:  # e.g. deflate64, which Python cannot unpack
            raise DatasetError(
                f"{info.filename}: {e}; create the zip again with ordinary (deflate) compression"
            ) from e
        except OSError as e:
            raise DatasetError(f"{info.filename}: cannot be extracted ({e.strerror or e})") from e


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


# --- pairing -------------------------------------------------------------------------------


def find_pairs(
    root: Path, *, skip_unpaired: bool = False
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair each audio file with the transcript of the same stem in the same folder.

    Returns the (audio, transcript) pairs, sorted by path, and warnings. Audio without a
    transcript, a transcript without audio, and names shared by two audio files or two
    transcripts are listed together in one DatasetError, or skipped with a warning when
    `skip_unpaired`. Stems must match exactly: `Talk1.mp3` and `talk1.vtt` are not paired.
    """
    root = Path(root)
    groups, others = _files_by_stem(root)
    pairs, problems = _pair_groups(groups, root)
    warnings = []
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        warnings.append(
            f"ignored {len(others)} files that are neither audio nor transcripts: {shown}"
        )
    if not pairs:
        found = f"found no audio file paired with a transcript ({_LAYOUT})"
        raise _fail(found, problems) if problems else DatasetError(found)
    if problems and not skip_unpaired:
        raise _fail(f"{len(problems)} files cannot be paired", problems, _SKIP_HINT)
    warnings += [f"skipped {p}" for p in problems]
    return pairs, warnings


_Groups = dict[tuple[Path, str], tuple[list[Path], list[Path]]]  # (folder, stem) -> files


def _files_by_stem(root: Path) -> tuple[_Groups, list[str]]:
    """The audio files and transcripts under `root` by (folder, stem), and the other files
    (their paths under `root`), all in sorted order; hidden files, clutter and links left out."""
    groups: _Groups = {}
    others: list[str] = []
    for folder, dirs, files in os.walk(root):  # does not follow links
        dirs[:] = sorted(d for d in dirs if not _ignored((d,)))
        for file in sorted(files):
            path = Path(folder, file)
            if _ignored((file,)) or path.is_symlink():
                continue
            suffix = path.suffix.lower()
            if suffix in AUDIO_SUFFIXES or suffix in TRANSCRIPT_SUFFIXES:
                audios, transcripts = groups.setdefault((path.parent, path.stem), ([], []))
                (audios if suffix in AUDIO_SUFFIXES else transcripts).append(path)
            else:
                others.append(_rel(path, root))
    return groups, others


def _pair_groups(groups: _Groups, root: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """One (audio, transcript) pair per stem that has exactly one of each, sorted by path,
    and a problem, saying what to fix, for every other stem."""

    def rel(path: Path) -> str:
        return _rel(path, root)

    stems_by_folder: dict[Path, list[str]] = {}
    for folder, stem in groups:
        stems_by_folder.setdefault(folder, []).append(stem)

    pairs, problems = [], []
    for (folder, stem), (audios, transcripts) in sorted(groups.items()):
        near = [s for s in stems_by_folder[folder] if s != stem and s.lower() == stem.lower()]
        hint = f" (names must match exactly, including case: is it {near[0]!r}?)" if near else ""
        where = rel(folder / stem)
        if len(audios) > 1:
            names = ", ".join(rel(a) for a in audios)
            problems.append(
                f"{names}: {len(audios)} audio files share the name {stem!r}; rename all but "
                "one (each recording needs its own transcript)"
            )
        elif len(transcripts) > 1:
            names = ", ".join(rel(t) for t in transcripts)
            problems.append(f"{names}: two transcripts for one recording; keep only one of them")
        elif not transcripts:
            problems.append(
                f"{rel(audios[0])}: has no transcript; add {where}.vtt (or .srt) next to it{hint}"
            )
        elif not audios:
            problems.append(
                f"{rel(transcripts[0])}: has no audio file with the same name; add the audio "
                f"as {where}.mp3 (or .wav, .flac ...) next to it, or remove the file{hint}"
            )
        else:
            pairs.append((audios[0], transcripts[0]))
    return pairs, problems


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --- transcripts and recordings ------------------------------------------------------------


# Byte order marks and their encodings. UTF-32 LE's mark begins with UTF-16 LE's, so the
# UTF-32 marks are tried first.
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32 LE"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32 BE"),
    (b"\xef\xbb\xbf", "utf-8", "UTF-8"),
    (b"\xff\xfe", "utf-16-le", "UTF-16 LE"),
    (b"\xfe\xff", "utf-16-be", "UTF-16 BE"),
)
# Bytes that are not UTF-8 look like Windows-1252 (or Latin-1) when they decode as it into
# Western text: few non-ASCII characters, in runs of at most this many ("é", "«\xa0"), and no
# byte pairs that look like UTF-8 (a mixed file) or CJK text (GB2312 reads as long runs).
_CP1252_MAX_RUN = 3
_CP1252_MAX_SHARE = 0.2
_NON_ASCII_RUN_RE = re.compile(r"[^\x00-\x7f]+")
_UTF8_LIKE_RE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")


def decode_transcript(data: bytes, name: str) -> str:
    """The text of a transcript file: UTF-8 (with or without a BOM), or UTF-16 or UTF-32 with
    a BOM. Raises DatasetError naming the encoding problem and asking for UTF-8. Other legacy
    encodings are refused, not guessed: a wrong guess would garble the words trained on."""
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError as e:
                raise DatasetError(
                    f"{name}: the text starts with a {label} byte order mark but is not valid "
                    f"{label} (at byte {e.start + len(bom)}); save it as UTF-8"
                ) from e
    if data.count(0) * 4 >= len(data) > 0:
        raise DatasetError(
            f"{name}: the text is full of zero bytes, like UTF-16 or UTF-32 without a byte "
            "order mark; save it as UTF-8"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        guess = ", probably Windows-1252 or Latin-1" if _looks_like_cp1252(data) else ""
        raise DatasetError(
            f"{name}: the text is not UTF-8 (byte 0x{data[e.start]:02x} at position "
            f"{e.start}{guess}); save it as UTF-8"
        ) from e


def _looks_like_cp1252(data: bytes) -> bool:
    """Whether ``data`` reads as Western text in Windows-1252 (see _CP1252_MAX_RUN)."""
    if _UTF8_LIKE_RE.search(data):
        return False
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90 and 0x9d are not Windows-1252
        return False
    runs = [len(run) for run in _NON_ASCII_RUN_RE.findall(text)]
    visible = len("".join(text.split()))
    return max(runs, default=0) <= _CP1252_MAX_RUN and sum(runs) <= _CP1252_MAX_SHARE * visible


def read_transcript(path: Path) -> list[Cue]:
    """The cues of a .vtt/.srt file, or of a .txt file as one cue from 0 to `math.inf` (the
    whole clip: a plain text has no times). Raises DatasetError naming the file for text
    that cannot be decoded (see `decode_transcript`), a parse error (with its line), or no
    text at all."""
    path = Path(path)
    text = decode_transcript(path.read_bytes(), path.name)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        words = " ".join(text.split())
        cues = [Cue(0.0, math.inf, words)] if words else []
    else:
        try:
            cues = parse_subtitles(text, suffix)
        except SubtitleError as e:
            raise DatasetError(f"{path.name}: {e}") from e
    if not cues:
        raise DatasetError(f"{path.name}: the transcript is empty (no text to train on)")
    return cues


def _ts(seconds: float) -> str:
    return format_timestamp(seconds, always_hours=False)


def _check_cues(cues: list[Cue], duration: float, name: str) -> tuple[list[Cue], list[str]]:
    """Cues that `windows` can use (text on one line, small overlaps and overruns clamped),
    and the problems that cannot be fixed without the user."""
    fixed: list[Cue] = []
    problems = []
    for cue in cues:
        span = f"{_ts(cue.start)} --> {_ts(cue.end)}"
        if cue.end - cue.start > CHUNK_LENGTH:
            problems.append(
                f"{name}: cue {span} is {cue.end - cue.start:.1f} s long, more than the 30 s "
                "Whisper hears at once; split it into shorter cues"
            )
        if cue.end > duration + END_TOLERANCE:
            problems.append(
                f"{name}: cue {span} ends after the end of the audio, which is {_ts(duration)} "
                f"({duration:.1f} s) long; check the cue times and that this is the right audio"
            )
        if fixed:
            prev = fixed[-1]
            prev_span = f"{_ts(prev.start)} --> {_ts(prev.end)}"
            if cue.start < prev.start:
                problems.append(
                    f"{name}: cues out of order: cue {span} comes after cue {prev_span} in the "
                    "file but starts earlier; sort the cues by time"
                )
            elif cue.start < prev.end - OVERLAP_TOLERANCE:
                problems.append(
                    f"{name}: cue {span} overlaps the cue before it ({prev_span}) by "
                    f"{prev.end - cue.start:.2f} s; make each cue end before the next starts"
                )
            elif cue.start < prev.end:
                fixed[-1] = Cue(prev.start, cue.start, prev.text)
        end = min(cue.end, duration)
        fixed.append(Cue(min(cue.start, end), end, " ".join(cue.text.split())))
    if len(problems) > MAX_PROBLEMS_PER_FILE:
        more = len(problems) - MAX_PROBLEMS_PER_FILE
        problems = problems[:MAX_PROBLEMS_PER_FILE] + [f"{name}: and {more} more problems"]
    return fixed, problems


def _load_recording(
    audio_path: Path, transcript_path: Path, name: str, limits: DatasetLimits, decoded: Path
) -> tuple[list[Example], float, list[str]]:
    """Windows, audio seconds and problems of one recording (no windows if any problem).

    `name` is the audio's path in the zip; messages name files by their path in the zip. The
    audio is decoded to `decoded` (raw samples), which the windows read from when used.
    """
    problems = []
    cues: list[Cue] = []
    audio = None
    try:
        cues = read_transcript(transcript_path)
    except DatasetError as e:
        transcript_name = (PurePosixPath(name).parent / transcript_path.name).as_posix()
        problems.append(f"{transcript_name}: {str(e).removeprefix(transcript_path.name + ': ')}")
    try:
        audio, peak = decode_to_file(audio_path, decoded, limits.max_recording_seconds)
    except AudioError as e:
        problems.append(f"{name}: {str(e).removeprefix(audio_path.name + ': ')}")
    if audio is None:
        return [], 0.0, problems
    duration = audio.size / SAMPLE_RATE
    if peak < SILENT_PEAK:
        problems.append(f"{name}: no sound (the audio is silent); check the file")
    if problems:
        return [], duration, problems
    if math.isinf(cues[0].end):  # a .txt: one text for the whole clip
        if duration > CHUNK_LENGTH + END_TOLERANCE:
            problems.append(
                f"{name}: the audio is {duration:.1f} s long but {transcript_path.name} has no "
                "times, so it only works for clips of at most 30 s; use a .vtt with times "
                "(or cut the audio into clips)"
            )
            return [], duration, problems
        # up to END_TOLERANCE past 30 s is encoder padding (an mp3 of a 30 s clip): trim it
        clip = audio[:N_SAMPLES].copy()
        return [Example(clip, cues[0].text, (), name, 0.0)], duration, []
    fixed, problems = _check_cues(cues, duration, name)
    if problems:
        return [], duration, problems
    return windows(audio, fixed, name), duration, []


# --- windows -------------------------------------------------------------------------------


def windows(
    audio: np.ndarray, cues: list[Cue], recording: str, max_seconds: float = CHUNK_LENGTH
) -> list[Example]:
    """Cut a recording into windows of at most `max_seconds` that never split a cue.

    Consecutive cues are packed greedily (`pack_spans`) while the last cue's end minus the
    first cue's start fits; the window then takes up to PAD_SECONDS of audio before its
    first and after its last cue where there is room (never into a neighbouring cue, past
    the audio, or past `max_seconds`). Cue times in the result are relative to the window,
    rounded to 0.01 s.
    `cues` must be in order, not overlap, lie within the audio and each fit in a window.
    """
    duration = audio.size / SAMPLE_RATE
    max_samples = int(round(max_seconds * SAMPLE_RATE))
    for k, cue in enumerate(cues):
        if cue.end - cue.start > max_seconds or cue.end > duration + 1e-3:
            raise ValueError(f"{recording}: cue {k} ({cue.start}-{cue.end}) does not fit")
        if k and cue.start < cues[k - 1].end - 1e-6:
            raise ValueError(f"{recording}: cue {k} starts before cue {k - 1} ends")
    result = []
    i = 0  # cues[i : j + 1] is the run in hand
    for run in pack_spans(cues, max_seconds):
        j = i + len(run) - 1
        first, last = run[0], run[-1]
        floor = cues[i - 1].end if i else 0.0
        ceiling = cues[j + 1].start if j + 1 < len(cues) else duration
        start = min(first.start, max(first.start - PAD_SECONDS, floor, last.end - max_seconds))
        end = max(last.end, min(last.end + PAD_SECONDS, ceiling, duration, start + max_seconds))
        lo = int(round(start * SAMPLE_RATE))
        hi = min(int(round(end * SAMPLE_RATE)), lo + max_samples, audio.size)
        offset = lo / SAMPLE_RATE
        length = math.floor((hi - lo) / SAMPLE_RATE * 100) / 100
        inside = tuple(
            Cue(
                min(max(round(c.start - offset, 2), 0.0), length),
                min(max(round(c.end - offset, 2), 0.0), length),
                " ".join(c.text.split()),  # one line: Whisper's labels have no line breaks
            )
            for c in run
        )
        text = " ".join(c.text for c in inside)
        result.append(Example(audio[lo:hi].copy(), text, inside, recording, offset))
        i = j + 1
    return result


class _Span(Protocol):
    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


SpanT = TypeVar("SpanT", bound=_Span)


def pack_spans(spans: Iterable[SpanT], max_seconds: float) -> list[list[SpanT]]:
    """Time-ordered spans (cues, segments) packed greedily into runs of consecutive spans,
    each lasting at most `max_seconds` from its first span's start to its last span's end.

    The one packer of training windows (`windows`) and of exported dataset clips
    (`outputs.group_clips`), so that what the export writes is cut the way training cuts.
    A run's first span is taken whatever its length: callers refuse or drop longer ones.
    """
    runs: list[list[SpanT]] = []
    for span in spans:
        if runs and span.end - runs[-1][0].start <= max_seconds:
            runs[-1].append(span)
        else:
            runs.append([span])
    return runs


def sentences(example: Example) -> list[Example]:
    """Each cue of a window as an example of its own: its audio with up to PAD_SECONDS either
    side (never into a neighbouring cue), its text, and its one cue. A window without cues (a
    .txt clip) stays whole. Training on these short examples, many per recording, is what
    puts new words into the weights (BENCHMARKS.md)."""
    if not example.cues:
        return [example]
    seconds = example.audio.size / SAMPLE_RATE
    found = []
    for k, cue in enumerate(example.cues):
        floor = example.cues[k - 1].end if k else 0.0
        ceiling = example.cues[k + 1].start if k + 1 < len(example.cues) else seconds
        start = min(cue.start, max(cue.start - PAD_SECONDS, floor))
        end = max(cue.end, min(cue.end + PAD_SECONDS, ceiling))
        lo, hi = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
        length = math.floor((hi - lo) / SAMPLE_RATE * 100) / 100
        timed = Cue(
            min(max(round(cue.start - start, 2), 0.0), length),
            min(max(round(cue.end - start, 2), 0.0), length),
            cue.text,
        )
        found.append(
            Example(
                example.audio[lo:hi].copy(),
                cue.text,
                (timed,),
                example.recording,
                round(example.start + start, 3),
            )
        )
    return found


# --- the whole dataset ---------------------------------------------------------------------


def load_dataset(
    zip_path: Path | list[Path],
    workdir: Path,
    *,
    validation_fraction: float = 0.1,
    validation_zip: Path | None = None,
    skip_bad: bool = False,
    seed: int = 0,
    limits: DatasetLimits = DatasetLimits(),
    too_small_hint: str = "add more audio or set validation_fraction=0",
) -> Dataset:
    """Load, check, window and split the training zip, or several (a list: their recordings
    are pooled, those of the second and later zips named `<zip name>/<path>`), and the
    validation zip, if given. `limits.max_total_seconds` counts all the zips together.

    Recordings go wholly to train or to validation, chosen by a seeded hash of their path in
    the zip, so the split does not depend on file order and a speaker's recording never
    lands in both. The zips are extracted under `workdir` and removed again once loaded.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = zip_path if isinstance(zip_path, list) else [zip_path]
    recordings, warnings = _load_zips(paths, workdir, skip_bad, limits)
    if validation_zip is not None:
        val_recordings, val_warnings, _ = _load_zip(Path(validation_zip), workdir, skip_bad, limits)
        warnings += [f"validation data: {w}" for w in val_warnings]
        train = [ex for _, examples in recordings for ex in examples]
        validation = [ex for _, examples in val_recordings for ex in examples]
        count = len(recordings) + len(val_recordings)
    else:
        train, validation, split_warnings = _split(
            recordings, validation_fraction, seed, too_small_hint
        )
        warnings += split_warnings
        count = len(recordings)
    seconds = sum(ex.audio.size for ex in train + validation) / SAMPLE_RATE
    dataset = Dataset(train, validation, count, seconds, warnings)
    _log_summary(dataset)
    return dataset


def _load_zips(
    paths: list[Path], workdir: Path, skip_bad: bool, limits: DatasetLimits
) -> tuple[list[tuple[str, list[Example]]], list[str]]:
    """The recordings of the training zips, pooled (those of the second and later zips named
    `<zip name>/<path>`), and their warnings; `limits.max_total_seconds` counts them all."""
    recordings, warnings, total = [], [], 0.0
    for k, path in enumerate(paths):
        prefix = f"{Path(path).name}/" if k else ""
        found, found_warnings, total = _load_zip(
            Path(path), workdir, skip_bad, limits, prefix, before=total
        )
        recordings += found
        warnings += found_warnings
    return recordings, warnings


def _log_summary(dataset: Dataset) -> None:
    """Every warning, then what was found: the log of a training run starts with its data."""
    for warning in dataset.warnings:
        logger.warning("%s", warning)
    train, validation = dataset.train, dataset.validation
    logger.info(
        "found %d recordings, %d windows (%d train, %d validation), %.1f min of audio",
        dataset.recordings,
        len(train) + len(validation),
        len(train),
        len(validation),
        dataset.seconds / 60,
    )


def _load_zip(
    zip_path: Path,
    workdir: Path,
    skip_bad: bool,
    limits: DatasetLimits,
    prefix: str = "",
    before: float = 0.0,
) -> tuple[list[tuple[str, list[Example]]], list[str], float]:
    """(recording name, its windows) for every good recording, sorted by name, warnings, and
    the seconds of audio decoded so far (`before`, from earlier zips, and this one's). Names
    are paths in the zip after `prefix`."""
    root = Path(tempfile.mkdtemp(prefix="unzipped-", dir=workdir))
    decoded = Path(tempfile.mkdtemp(prefix="decoded-", dir=workdir))  # kept: windows read it
    try:
        safe_extract(zip_path, root, limits)
        pairs, warnings = find_pairs(root, skip_unpaired=skip_bad)
        recordings, problems, bad = [], [], 0
        total = before
        step = max(1, len(pairs) // 10)
        for k, (audio_path, transcript_path) in enumerate(pairs):
            name = prefix + _rel(audio_path, root)
            examples, seconds, found = _load_recording(
                audio_path, transcript_path, name, limits, decoded / f"{k:05d}.f32"
            )
            total += seconds
            if total > limits.max_total_seconds:
                raise DatasetError(
                    f"{zip_path.name}: more than {_duration(limits.max_total_seconds)} of "
                    "audio in all, the limit; train on fewer or shorter recordings"
                )
            if found:
                problems += found
                bad += 1
                (decoded / f"{k:05d}.f32").unlink(missing_ok=True)
            else:
                recordings.append((name, examples))
            if (k + 1) % step == 0 or k + 1 == len(pairs):
                logger.info("%s: checked %d/%d recordings", zip_path.name, k + 1, len(pairs))
        if problems and not recordings:
            raise _fail(f"{zip_path.name}: none of the recordings can be used", problems)
        if problems and not skip_bad:
            summary = f"{zip_path.name}: {bad} of {len(pairs)} recordings cannot be used"
            raise _fail(summary, problems, _SKIP_HINT)
    except BaseException:
        shutil.rmtree(decoded, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
    warnings += [f"skipped {p}" for p in problems]
    return recordings, warnings, total


def _split(
    recordings: list[tuple[str, list[Example]]], fraction: float, seed: int, hint: str
) -> tuple[list[Example], list[Example], list[str]]:
    if fraction == 0:
        return [ex for _, examples in recordings for ex in examples], [], []
    if len(recordings) == 1:
        name, examples = recordings[0]
        if len(examples) < 2:
            raise DatasetError(
                f"the data is too small to split: one recording ({name}) with "
                f"{len(examples)} window of at most 30 s; {hint}"
            )
        n_val = min(len(examples) - 1, max(1, round(fraction * len(examples))))
        warning = (
            f"only one recording ({name}): validation uses its last {n_val} of "
            f"{len(examples)} windows; add more recordings for a fairer score"
        )
        return examples[:-n_val], examples[-n_val:], [warning]

    def rank(item: tuple[str, list[Example]]) -> str:
        return hashlib.sha256(f"{seed}\0{item[0]}".encode()).hexdigest()

    n_val = min(len(recordings) - 1, max(1, round(fraction * len(recordings))))
    chosen = {name for name, _ in sorted(recordings, key=rank)[:n_val]}
    train = [ex for name, examples in recordings if name not in chosen for ex in examples]
    validation = [ex for name, examples in recordings if name in chosen for ex in examples]
    return train, validation, []
