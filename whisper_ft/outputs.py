"""Turn a transcription into what a prediction returns: text, subtitle files, or a dataset.

`run_task` is the one call the predictor makes. The dataset task cuts the audio into clips
of at most 30 s on segment boundaries, each with its `.vtt`, zipped in exactly the layout
that training accepts, so a user can correct the text and train on it unchanged.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from whisper_ft.audio import CHUNK_LENGTH, SAMPLE_RATE, probe_duration, write_audio
from whisper_ft.dataset import pack_spans
from whisper_ft.subtitles import (
    NETFLIX_ENGLISH,
    Cue,
    CueRules,
    TimedWord,
    build_cues,
    words_from_text,
    write_srt,
    write_txt,
    write_vtt,
)
from whisper_ft.transcribe import Segment, Transcriber, TranscribeSettings, Transcript

logger = logging.getLogger(__name__)

FORMATS = ("txt", "srt", "vtt", "json")
CLIP_PAD_SECONDS = 0.2  # audio kept around the speech of a clip, where there is room
ESTIMATED_NOTE = (
    "the model gave no word timing for some speech; those cues are split by text and timed "
    "in proportion"
)


@dataclass
class Result:
    transcript: Transcript
    languages: list[tuple[str, float]] | None = None  # for detect_language
    files: dict[str, Path] = field(default_factory=dict)  # output name -> file


def parse_formats(text: str) -> list[str]:
    """`"srt, vtt"` -> ["srt", "vtt"]; an empty string asks for no files."""
    formats = [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"output_formats: unknown format {', '.join(unknown)}; use any of {', '.join(FORMATS)}"
        )
    return list(dict.fromkeys(formats))


def run_task(
    transcriber: Transcriber,
    audio: Path,
    task: str,
    settings: TranscribeSettings,
    formats: list[str],
    out_dir: Path,
    rules: CueRules = NETFLIX_ENGLISH,
    highlight_words: bool = False,
) -> Result:
    stem = safe_stem(audio)
    if task == "detect_language":
        languages = transcriber.detect_language(audio)
        code, probability = languages[0]
        duration = probe_duration(audio) or 0.0
        return Result(Transcript("", code, probability, duration), languages=languages)
    if task == "dataset":
        zip_path = out_dir / f"{stem}-dataset.zip"
        with DatasetWriter(zip_path, stem) as writer:
            transcript = transcriber.transcribe(audio, settings, on_piece=writer.add_piece)
        logger.info("dataset: %d clips in %s", writer.count, zip_path.name)
        return Result(transcript, files={"dataset": zip_path})
    # Subtitle cues are built from timed words, so words are aligned whenever subtitles are
    # asked for; they stay in the returned segments only when word_timestamps was asked.
    subtitles = bool({"srt", "vtt"} & set(formats))
    aligned = replace(settings, word_timestamps=settings.word_timestamps or subtitles)
    transcript = transcriber.transcribe(audio, aligned)
    shown = transcript
    if not settings.word_timestamps:
        shown = replace(transcript, segments=[replace(s, words=None) for s in transcript.segments])
    files = write_files(transcript, formats, out_dir, stem, rules, highlight_words, shown)
    return Result(shown, files=files)


def transcript_cues(
    transcript: Transcript, rules: CueRules = NETFLIX_ENGLISH
) -> tuple[list[Cue], bool]:
    """The transcript's subtitle cues, and whether their word times are estimated: a segment
    whose words carry no timing is split by its text, in proportion to time."""
    words: list[TimedWord] = []
    estimated = False
    for segment in transcript.segments:
        if segment.words:
            words += [TimedWord(w.start, w.end, w.word) for w in segment.words]
        else:
            estimated = estimated or bool(segment.text.strip())
            words += words_from_text(segment.start, segment.end, segment.text)
    return build_cues(words, rules, transcript.duration), estimated


def write_files(
    transcript: Transcript,
    formats: list[str],
    out_dir: Path,
    stem: str,
    rules: CueRules = NETFLIX_ENGLISH,
    highlight_words: bool = False,
    shown: Transcript | None = None,
) -> dict:
    """Write the asked formats: cues from `transcript`'s timed words; the JSON file holds
    `shown` (default: the transcript itself)."""
    cues, estimated = transcript_cues(transcript, rules)
    note = ""
    if estimated and {"srt", "vtt"} & set(formats):
        note = ESTIMATED_NOTE
        logger.warning("subtitles: %s", note)
    shown = shown or transcript
    writers = {
        "txt": lambda: write_txt([Cue(s.start, s.end, s.text) for s in transcript.segments]),
        "srt": lambda: write_srt(cues, highlight_words),
        "vtt": lambda: write_vtt(cues, highlight_words, note),
        "json": lambda: json.dumps(asdict(shown), ensure_ascii=False, indent=2) + "\n",
    }
    files = {}
    for name in formats:
        path = out_dir / f"{stem}.{name}"
        path.write_text(writers[name](), encoding="utf-8")
        files[name] = path
    return files


def safe_stem(path: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(path).stem)[:80]
    return stem or "audio"


def group_clips(segments: list[Segment]) -> list[list[Segment]]:
    """Consecutive segments grouped so that each group spans at most 30 s (one Whisper
    window, the longest clip training accepts) with CLIP_PAD_SECONDS of room either side.
    A segment longer than 30 s cannot be a clip: it is left out with a warning."""
    fitting = []
    for seg in segments:
        if seg.end - seg.start > CHUNK_LENGTH:
            logger.warning("dataset: skipped a segment longer than 30 s at %.1f s", seg.start)
        else:
            fitting.append(seg)
    return pack_spans(fitting, CHUNK_LENGTH - 2 * CLIP_PAD_SECONDS)


class DatasetWriter:
    """Writes clip_NNNN.wav + clip_NNNN.vtt pairs into a zip, one piece of audio at a time."""

    def __init__(self, zip_path: Path, stem: str):
        self.zip_path = zip_path
        self.stem = stem
        self.count = 0
        self._zip = zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()
        if exc[0] is not None:
            self.zip_path.unlink(missing_ok=True)

    def add_piece(
        self, offset: float, audio: np.ndarray, segments: list[Segment], stem: str | None = None
    ) -> None:
        """Write the clips of one piece of audio (`segments`: anything with a start, an end
        and a text, on the whole file's timeline); `stem` names its clips (default: the
        writer's)."""
        end_of_piece = offset + audio.size / SAMPLE_RATE
        for group in group_clips(segments):
            start = max(offset, group[0].start - CLIP_PAD_SECONDS)
            end = min(end_of_piece, group[-1].end + CLIP_PAD_SECONDS, start + CHUNK_LENGTH)
            clip = audio[int((start - offset) * SAMPLE_RATE) : int((end - offset) * SAMPLE_RATE)]
            cues: list[Cue] = []
            for s in group:
                cue_start = round(max(0.0, s.start - start), 3)
                if cues and cue_start < cues[-1].end:
                    # Whisper's segments may overlap by a few tenths of a second, which a
                    # transcript to train on may not: the earlier cue ends where this begins.
                    prev = cues[-1]
                    cue_start = max(cue_start, prev.start)
                    cues[-1] = Cue(prev.start, cue_start, prev.text)
                cue_end = round(max(cue_start, min(end, s.end) - start), 3)
                cues.append(Cue(cue_start, cue_end, s.text))
            self.count += 1
            name = f"{stem or self.stem}_{self.count:04d}"
            wav = self.zip_path.parent / f"{name}.wav"
            write_audio(wav, clip)
            self._zip.write(wav, f"{name}.wav")
            wav.unlink()
            self._zip.writestr(f"{name}.vtt", write_vtt(cues))
