"""Transcribe, translate and identify the language of audio with CTranslate2 (faster-whisper).

Why faster-whisper: on CPU it runs Whisper faster than PyTorch at the same accuracy
(CTranslate2's int8 kernels) and already brings VAD, batched long-form decoding, word
timestamps, hotwords and the temperature fallback. This module adds what a service needs
around it: validated settings, streaming of long files in pieces cut at quiet points (so
hours of audio never sit in memory at once), progress in the logs, and typed results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from cog import BaseModel

from whisper_ft import progress
from whisper_ft.audio import CHUNK_LENGTH, N_SAMPLES, QUIET_PEAK, SAMPLE_RATE, stream_audio
from whisper_ft.inputs import check_settings, setting
from whisper_ft.subtitles import NETFLIX_ENGLISH, TimedWord, group_words

logger = logging.getLogger(__name__)

TASKS = ("transcribe", "translate")
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai/whisper's schedule
PIECE_SECONDS = 600  # long files are decoded and transcribed ten minutes at a time
CUT_SEARCH_SECONDS = 20  # a piece ends at the quietest moment of its last 20 s
# The longest audio one request takes; set WHISPER_FT_MAX_AUDIO_HOURS to change it.
MAX_AUDIO_SECONDS = float(os.environ.get("WHISPER_FT_MAX_AUDIO_HOURS", "6")) * 3600
MAX_BEAM_SIZE = 10
PROGRESS_STEP = 5.0  # percent of the audio between two progress lines in the logs


def language_code(language: str | None) -> str | None:
    """Map `auto`/None, a code (`fr`) or a name (`French`) to a Whisper language code."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    if language is None or language.strip().lower() in ("", "auto"):
        return None
    key = language.strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ValueError(
        f"language: unknown language {language!r}; use `auto`, a code such as `en`, `fr`, "
        "`de`, or a name such as `French`"
    )


@dataclass(frozen=True)
class TranscribeSettings:
    task: str = "transcribe"  # transcribe, or translate into English
    language: str | None = None  # a Whisper language code; None detects it
    beam_size: int = setting(5, ge=1, le=MAX_BEAM_SIZE)  # beams for the first decoding
    temperature: float = setting(0.0, ge=0.0, le=1.0)  # first temperature; more follow on failure
    temperature_fallback: bool = setting(True)  # retry at 0.2, 0.4 ... when a window looks wrong
    word_timestamps: bool = setting(False)  # add per-word start/end/probability
    vad_filter: bool = setting(False)  # cut long audio by Silero VAD, not at quiet moments
    initial_prompt: str | None = setting(None, max_length=1000)  # primes spellings, style
    hotwords: str | None = setting(None, max_length=500)  # words to favour, in every window
    condition_on_previous_text: bool = setting(True)  # prompt each window with the text before
    batch_size: int = setting(8, ge=1, le=64)  # windows decoded together; 1 = sequential
    # A window above this no-speech probability (and with a low log-probability) is silent.
    no_speech_threshold: float = setting(0.6, ge=0.0, le=1.0)
    # Above this gzip ratio a window is a repetition loop.
    compression_ratio_threshold: float = setting(2.4, ge=1.0, le=10.0)
    # Below this average log-probability decoding is retried.
    log_prob_threshold: float = setting(-1.0, ge=-10.0, le=0.0)

    def validate(self, *, multilingual: bool) -> TranscribeSettings:
        """Check every field; return the settings with the language code normalised."""
        if self.task not in TASKS:
            raise ValueError(f"task: {self.task!r} is not one of {', '.join(TASKS)}")
        language = language_code(self.language)
        if not multilingual and self.task == "translate":
            raise ValueError(
                "task: translate needs a multilingual model; this model is English-only "
                "(use the `base` model or another multilingual one)"
            )
        if not multilingual and language not in (None, "en"):
            raise ValueError(
                f"language: this model is English-only and cannot transcribe {language!r}; "
                "use a multilingual model such as `base`"
            )
        check_settings(self)
        return replace(self, language=language)

    @property
    def temperatures(self) -> tuple[float, ...]:
        if not self.temperature_fallback:
            return (self.temperature,)
        return (self.temperature, *(t for t in FALLBACK_TEMPERATURES if t > self.temperature))


# Words and segments are Cog output types too: predict.py returns them as they are.
class Word(BaseModel, frozen=True):
    start: float
    end: float
    word: str
    probability: float


class Segment(BaseModel, frozen=True):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: list[Word] | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[Segment] = field(default_factory=list)


def default_device() -> tuple[str, str]:
    """(device, compute_type): float16 on a CUDA GPU, int8 on CPU."""
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        return "cuda", "float16"
    return "cpu", "int8"


class Transcriber:
    """One loaded Whisper model; `transcribe` and `detect_language` are safe to call repeatedly."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        device: str | None = None,
        compute_type: str | None = None,
        max_duration: float | None = MAX_AUDIO_SECONDS,
    ):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        auto_device, auto_compute = default_device()
        device = device or auto_device
        compute_type = compute_type or (auto_compute if device == auto_device else "default")
        threads = (os.cpu_count() or 1) if device == "cpu" else 0
        logger.info("loading %s on %s (%s, %s threads)", model_dir, device, compute_type, threads)
        self.model = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads
        )
        self.batched = BatchedInferencePipeline(self.model)
        self.device = device
        self.compute_type = compute_type
        self.max_duration = max_duration

    @property
    def multilingual(self) -> bool:
        return self.model.model.is_multilingual

    def detect_language(self, path: str | os.PathLike, top: int = 5) -> list[tuple[str, float]]:
        """The `top` most likely languages of the speech in the first 30 s (after VAD)."""
        audio = next(pieces(path, CHUNK_LENGTH * 4))[1]
        if not self.multilingual:
            return [("en", 1.0)]
        vad = audio.size > N_SAMPLES  # more than one window: let VAD find the speech
        _, _, probs = self.model.detect_language(audio, vad_filter=vad)
        return [(code, float(p)) for code, p in probs[:top]]

    def transcribe(
        self,
        path: str | os.PathLike,
        settings: TranscribeSettings,
        *,
        on_piece: Callable[[float, np.ndarray, list[Segment]], None] | None = None,
    ) -> Transcript:
        """Transcribe (or translate) a file of any length.

        The file is streamed in pieces of at most ten minutes; `on_piece(offset, audio,
        segments)` sees each piece with its segments (times relative to the whole file),
        which lets the dataset export cut clips without holding the whole file.
        """
        settings = settings.validate(multilingual=self.multilingual)
        segments: list[Segment] = []
        language, probability, duration = settings.language, 1.0, 0.0
        total, logged = _duration_hint(path), -100.0
        for offset, audio in pieces(path, max_duration=self.max_duration):
            piece = replace(settings, language=language)
            found, info = self._transcribe_array(audio, piece, first_id=len(segments))
            if language is None and info is not None:  # detect once, on speech, then keep it
                language, probability = info.language, float(info.language_probability)
            for segment in found:
                segments.append(_shift(segment, offset))
                done = 100.0 * (offset + segment.end) / total if total else 0.0
                if total and done - logged >= PROGRESS_STEP:  # every 5%, not every segment
                    logged = done
                    progress.report(
                        logger,
                        "transcribe",
                        "transcribed %.0f%% (%.1f s of %.1f s)",
                        min(done, 100.0),
                        offset + segment.end,
                        total,
                        done=round(offset + segment.end, 1),
                        total=total,
                    )
            duration = offset + audio.size / SAMPLE_RATE
            progress.emit("transcribe", done=round(duration, 1), total=total or duration)
            if on_piece is not None:
                on_piece(offset, audio, segments[len(segments) - len(found) :])
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcript(text, language or "en", probability, duration, segments)

    def _transcribe_array(self, audio: np.ndarray, s: TranscribeSettings, first_id: int):
        """Segments of one piece, and faster-whisper's info (None when it is all silence:
        Whisper invents words such as "you" on digital silence)."""
        seconds = audio.size / SAMPLE_RATE
        if not _audible(audio):
            return [], None
        if s.batch_size == 1 or seconds <= CHUNK_LENGTH:
            # One window, or sequential decoding asked for: Whisper's own long-form loop,
            # with timestamp tokens, conditioning on previous text and temperature fallback.
            found, info = self._sequential(audio, s)
            found = [replace(segment, id=first_id + i) for i, segment in enumerate(found)]
            # A timestamp token may point past the end of the audio: keep times inside it.
            return [clamp_segment(segment, seconds) for segment in found], info
        # Long audio: windows of <=30 s cut at quiet moments (or by VAD when asked) decoded in
        # batches without timestamp tokens, then timed by word alignment and cut into
        # subtitle-sized segments. Why this path, and not timestamp tokens in batched mode or
        # VAD-cut windows: BENCHMARKS.md, "Serving".
        windows = None
        if not s.vad_filter:
            windows = [w for w in quiet_windows(audio) if _audible(audio, w)]
        raw, info = self._batched(audio, s, windows)
        bounds = windows or [None] * len(raw)  # VAD's windows are not known here
        kept = [(b, r) for b, r in zip(bounds, raw, strict=True) if not _no_speech(r, s)]
        raw = [r for _, r in kept]
        heard = [[_word(w) for w in r.words or []] for r in raw]
        heard = self._read_skipped_again(audio, s, heard, [b for b, _ in kept])
        found: list[Segment] = []
        for window, window_words in zip(raw, heard, strict=True):
            for words in subtitle_sized(window_words, window.end):
                found.append(
                    Segment(
                        id=first_id + len(found),
                        start=words[0].start,
                        end=words[-1].end,
                        text="".join(w.word for w in words).strip(),
                        avg_logprob=float(window.avg_logprob),
                        no_speech_prob=float(window.no_speech_prob),
                        words=words if s.word_timestamps else None,
                    )
                )
        return found, info

    def _read_skipped_again(
        self,
        audio: np.ndarray,
        s: TranscribeSettings,
        heard: list[list[Word]],
        windows: list[dict | None],
    ) -> list[list[Word]]:
        """Batched decoding without timestamp tokens sometimes skips a passage of a window
        (a second voice, a quotation over music): the words around it are aligned across it,
        leaving a long pause or one word stretched over seconds. Those spans, where the audio
        is not quiet, are decoded again on their own; a confident new reading replaces the old
        one where it finds at least two more words (BENCHMARKS.md, "Serving")."""
        spans, owners = [], []  # spans to read again, and the window each belongs to
        for k, (words, window) in enumerate(zip(heard, windows, strict=True)):
            found = skipped_spans(audio, words, window)
            spans += found
            owners += [k] * len(found)
        if not spans:
            return heard
        again, _ = self._batched(audio, replace(s, vad_filter=False), spans)
        for span, k, reading in zip(spans, owners, again, strict=True):
            new = [_word(w) for w in reading.words or []]
            if _no_speech(reading, s) or not new or reading.avg_logprob < REREAD_MIN_LOGPROB:
                continue
            inside = [w for w in heard[k] if span["start"] <= (w.start + w.end) / 2 < span["end"]]
            if len(new) >= len(inside) + MIN_WORDS_FOUND:
                kept = [w for w in heard[k] if w not in inside]
                heard[k] = sorted(kept + new, key=lambda w: w.start)
        return heard

    def _sequential(self, audio: np.ndarray, s: TranscribeSettings):
        raw, info = self.model.transcribe(
            audio,
            vad_filter=bool(s.vad_filter),
            word_timestamps=s.word_timestamps,
            condition_on_previous_text=s.condition_on_previous_text,
            **_decoding(s),
        )
        return [_segment(i, seg) for i, seg in enumerate(raw) if seg.text.strip()], info

    def _batched(self, audio: np.ndarray, s: TranscribeSettings, windows: list[dict] | None):
        """One faster-whisper segment per window (`windows`, or VAD's when None), in order."""
        raw, info = self.batched.transcribe(
            audio,
            batch_size=s.batch_size,
            vad_filter=bool(s.vad_filter),
            clip_timestamps=windows,
            without_timestamps=True,
            word_timestamps=True,
            **_decoding(s),
        )
        return list(raw), info


def _decoding(s: TranscribeSettings) -> dict:
    """faster-whisper's decoding options for `s` (both of its pipelines take them)."""
    return dict(
        language=s.language,
        task=s.task,
        beam_size=s.beam_size,
        temperature=list(s.temperatures),
        initial_prompt=s.initial_prompt or None,
        hotwords=s.hotwords or None,
        no_speech_threshold=s.no_speech_threshold,
        compression_ratio_threshold=s.compression_ratio_threshold,
        log_prob_threshold=s.log_prob_threshold,
    )


def subtitle_sized(words: list[Word], end_of_window: float) -> list[list[Word]]:
    """Timed words grouped into segments the size of a readable subtitle cue: the same
    grouping as the subtitle files (whisper_ft/subtitles.py, `group_words`)."""
    timed = [TimedWord(w.start, w.end, w.word.strip()) for w in words]
    groups, k = [], 0
    for group in group_words(timed, NETFLIX_ENGLISH, end_of_window):
        groups.append(words[k : k + len(group)])
        k += len(group)
    return groups


SKIP_SECONDS = 1.5  # a pause between two words, or one word, this long may hide a passage
MIN_WORDS_FOUND = 2  # a second reading replaces the first where it finds this many more words
SPEECH_LEVEL = 0.3  # a span is read again when its RMS is at least this share of the audio's
# A second reading must be confident: on a span of noise Whisper writes its stock phrases
# ("Thanks for watching.") at a lower mean log-probability than the passages it had skipped
# (BENCHMARKS.md, "Subtitles").
REREAD_MIN_LOGPROB = -0.8


def skipped_spans(audio: np.ndarray, words: list[Word], window: dict | None = None) -> list[dict]:
    """Spans of a window's audio that its words may have skipped: a pause of SKIP_SECONDS or
    more between two words (or, given the window, before the first or after the last), or a
    word lasting that long (from the word before it to the word after it), where the audio
    is about as loud as speech. [{"start": s, "end": s}]"""
    level = float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
    spans = []
    if window is not None and words:
        if words[0].start - window["start"] >= SKIP_SECONDS:
            spans.append((window["start"], words[0].start))
        if window["end"] - words[-1].end >= SKIP_SECONDS:
            spans.append((words[-1].end, window["end"]))
    for k, word in enumerate(words):
        before = words[k - 1].end if k else None
        if before is not None and word.start - before >= SKIP_SECONDS:
            spans.append((before, word.start))
        if word.end - word.start >= SKIP_SECONDS:
            after = words[k + 1].start if k + 1 < len(words) else word.end
            spans.append((before if before is not None else word.start, after))
    found = []
    for start, end in spans:
        piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        if end - start >= 1.0 and np.sqrt(np.mean(piece**2)) >= SPEECH_LEVEL * level:
            found.append({"start": float(start), "end": float(end)})
    return found


def _no_speech(segment, s: TranscribeSettings) -> bool:
    """Whisper's no-speech rule, which batched decoding does not apply by itself."""
    silent = segment.no_speech_prob > s.no_speech_threshold
    return silent and segment.avg_logprob < s.log_prob_threshold


def quiet_windows(audio: np.ndarray) -> list[dict]:
    """Cut audio into windows of at most 30 s at quiet moments: [{"start": s, "end": s}]."""
    windows, start = [], 0
    while audio.size - start > N_SAMPLES:
        cut = start + quietest_cut(audio[start:], N_SAMPLES)
        windows.append({"start": start / SAMPLE_RATE, "end": cut / SAMPLE_RATE})
        start = cut
    windows.append({"start": start / SAMPLE_RATE, "end": audio.size / SAMPLE_RATE})
    return windows


def clamp_segment(segment: Segment, seconds: float) -> Segment:
    """The segment (and its words) kept inside the first `seconds` of the audio."""
    words = segment.words
    if words is not None:
        words = [replace(w, start=min(w.start, seconds), end=min(w.end, seconds)) for w in words]
    start = min(segment.start, seconds)
    return replace(segment, start=start, end=max(start, min(segment.end, seconds)), words=words)


def _audible(audio: np.ndarray, window: dict | None = None) -> bool:
    if window is not None:
        audio = audio[int(window["start"] * SAMPLE_RATE) : int(window["end"] * SAMPLE_RATE)]
    return audio.size > 0 and float(np.abs(audio).max()) >= QUIET_PEAK


def _word(w) -> Word:
    return Word(float(w.start), float(w.end), w.word, float(w.probability))


def _segment(index: int, seg) -> Segment:
    words = None if seg.words is None else [_word(w) for w in seg.words]
    return Segment(
        id=index,
        start=float(seg.start),
        end=float(seg.end),
        text=seg.text.strip(),
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
        words=words,
    )


def _shift(segment: Segment, offset: float) -> Segment:
    if not offset:
        return segment
    words = segment.words
    if words is not None:
        words = [replace(w, start=w.start + offset, end=w.end + offset) for w in words]
    return replace(segment, start=segment.start + offset, end=segment.end + offset, words=words)


def _duration_hint(path: str | os.PathLike) -> float | None:
    from whisper_ft.audio import probe_duration

    try:
        return probe_duration(path)
    except Exception:  # progress is a nicety; decoding reports real errors
        return None


def pieces(
    path: str | os.PathLike,
    piece_seconds: float = PIECE_SECONDS,
    max_duration: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (offset seconds, audio) pieces of at most `piece_seconds`, cut at quiet moments."""
    limit = int(piece_seconds * SAMPLE_RATE)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0
    for block in stream_audio(Path(path), max_duration=max_duration):
        buffer = np.concatenate([buffer, block])
        while buffer.size > limit:
            cut = quietest_cut(buffer, limit)
            yield offset / SAMPLE_RATE, buffer[:cut]
            offset += cut
            buffer = buffer[cut:]
    if buffer.size or offset == 0:
        yield offset / SAMPLE_RATE, buffer


def quietest_cut(audio: np.ndarray, limit: int) -> int:
    """A sample index, at most `limit`, in the quietest 100 ms of the last 20 s before it.

    Of frames about as quiet as the quietest, the latest wins: pieces stay long, so fewer
    windows are decoded.
    """
    frame = SAMPLE_RATE // 10
    start = max(frame, limit - CUT_SEARCH_SECONDS * SAMPLE_RATE)
    window = audio[start:limit]
    n = window.size // frame
    if n == 0:
        return limit
    energy = (window[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    quiet = np.flatnonzero(energy <= energy.min() * 2 + 1e-10)
    return start + int(quiet[-1]) * frame + frame // 2
