"""Cog predictor: transcribe, translate or identify the language of any audio or video.

    cog predict -i audio=@clip.mp3
    python -m whisper_ft predict -i audio=@clip.mp3 -i task=translate
    COG_PREDICT_TYPE_STUB=predict.py:Predictor python -m cog.server.http

A thin adapter: the inputs that are settings are declared once, on `TranscribeSettings` and
`CueRules` (whisper_ft/inputs.py); all are checked by `check_inputs` (a local Cog server
without a built schema does not check them), mapped onto those settings and passed to the
package. The model is loaded once in `setup`.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path as LocalPath

from cog import BaseModel, BaseRunner, Input, Path

from whisper_ft import outputs
from whisper_ft import weights as model_weights
from whisper_ft.archive import served_vocabulary
from whisper_ft.inputs import check_inputs, inputs_declared, settings_from
from whisper_ft.progress import configure_logging
from whisper_ft.subtitles import CueRules
from whisper_ft.transcribe import Segment, Transcriber, TranscribeSettings
from whisper_ft.vocabulary import as_hotwords

logger = logging.getLogger(__name__)


class LanguageOut(BaseModel):
    language: str
    probability: float


class Output(BaseModel):
    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[Segment]
    detected_languages: list[LanguageOut] | None = None
    txt: Path | None = None
    srt: Path | None = None
    vtt: Path | None = None
    json: Path | None = None
    dataset: Path | None = None


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:
        """Load the model: COG_WEIGHTS (a trained archive or directory), else the one named
        by WHISPER_FT_MODEL (`base`, `tiny.en`, a directory or a hub id), else `base`."""
        configure_logging()
        spec = str(weights) if weights else os.environ.get("WHISPER_FT_MODEL") or None
        self.model_dir = model_weights.ct2_model(spec)
        self.transcriber = Transcriber(self.model_dir)
        # A trained model spells the words it was taught from its weights alone; the list of
        # them (the manifest's vocabulary) is read as a prompt only when a request asks.
        self.vocabulary = served_vocabulary(self.model_dir)
        if self.vocabulary:
            logger.info(
                "taught words (in the weights; read as a prompt too with use_vocabulary=true): %s",
                ", ".join(self.vocabulary),
            )
        self.out_dir: LocalPath | None = None
        atexit.register(lambda: self.out_dir and shutil.rmtree(self.out_dir, ignore_errors=True))

    @inputs_declared(TranscribeSettings, CueRules)
    def run(
        self,
        audio: Path = Input(description="Audio or video file (or URL) to transcribe"),
        task: str = Input(
            default="transcribe",
            choices=["transcribe", "translate", "detect_language", "dataset"],
            description="transcribe; translate to English; detect_language; or dataset: "
            "a zip of <=30 s clips with .vtt transcripts, ready to correct and train on",
        ),
        language: str = Input(
            default="auto", description="Spoken language: auto, a code (en, fr) or a name"
        ),
        output_formats: str = Input(
            default="txt,srt,vtt,json",
            description="Comma-separated files to return: any of txt, srt, vtt, json",
        ),
        word_timestamps: bool = Input(default=False, description="Add per-word timings"),
        vad_filter: bool = Input(
            default=False,
            description="Cut long audio where Silero VAD finds speech (skips long silence or "
            "music) instead of at quiet moments",
        ),
        beam_size: int = Input(default=5, ge=1, le=10, description="Beam search width"),
        temperature: float = Input(
            default=0.0, ge=0.0, le=1.0, description="First sampling temperature"
        ),
        temperature_fallback: bool = Input(
            default=True, description="Retry failed windows at higher temperatures"
        ),
        initial_prompt: str | None = Input(
            default=None, max_length=1000, description="Text to prime spelling and style"
        ),
        hotwords: str | None = Input(
            default=None, max_length=500, description="Words or names to favour"
        ),
        use_vocabulary: bool = Input(
            default=False,
            description="A fine-tuned model: also read the words it was taught as hotwords in "
            "every window (when no hotwords are given); its weights spell them without this",
        ),
        condition_on_previous_text: bool = Input(
            default=True, description="Prompt each window with the text before it"
        ),
        batch_size: int = Input(
            default=8,
            ge=1,
            le=64,
            description="30 s windows decoded together on long audio; 1: Whisper's sequential "
            "loop (timestamp tokens, previous-text prompts, temperature fallback)",
        ),
        max_line_width: int = Input(
            default=42,
            ge=1,
            le=200,
            description="Subtitles: characters on a line (42: Netflix English; about 25 for "
            "vertical video, with max_line_count=1)",
        ),
        max_line_count: int = Input(
            default=2, ge=1, le=10, description="Subtitles: lines on screen at once"
        ),
        max_cue_seconds: float = Input(
            default=7.0, ge=1.0, le=60.0, description="Subtitles: longest time a cue stays up"
        ),
        max_words_per_cue: int = Input(
            default=0, ge=0, le=100, description="Subtitles: most words in a cue; 0: no limit"
        ),
        highlight_words: bool = Input(
            default=False,
            description="Subtitles: karaoke-style word timing (WebVTT timestamp tags before "
            "each word; in SRT one cue per word, that word underlined)",
        ),
        no_speech_threshold: float = Input(default=0.6, ge=0.0, le=1.0),
        compression_ratio_threshold: float = Input(default=2.4, ge=1.0, le=10.0),
        log_prob_threshold: float = Input(default=-1.0, ge=-10.0, le=0.0),
    ) -> Output:
        args = check_inputs(Predictor.run, {k: v for k, v in locals().items() if k != "self"})
        formats = outputs.parse_formats(args["output_formats"])
        taught = as_hotwords(self.vocabulary) if args["use_vocabulary"] else None
        settings = settings_from(
            TranscribeSettings,
            args,
            task="transcribe" if args["task"] == "dataset" else args["task"],
            hotwords=args["hotwords"] or taught,
        )
        rules = settings_from(CueRules, args).validate()
        # Cog reads a prediction's files after run() returns, so each request's folder is
        # removed when the next one starts: at most one request's files are ever on disk.
        if self.out_dir is not None:
            shutil.rmtree(self.out_dir, ignore_errors=True)
        self.out_dir = LocalPath(tempfile.mkdtemp(prefix="whisper-ft-"))
        result = outputs.run_task(
            self.transcriber,
            args["audio"],
            args["task"],
            settings,
            formats,
            self.out_dir,
            rules,
            args["highlight_words"],
        )
        return to_output(result)


def rounded(segment: Segment) -> Segment:
    """A segment with its times (and its words') to the millisecond, as returned."""
    words = segment.words
    if words is not None:
        words = [replace(w, start=round(w.start, 3), end=round(w.end, 3)) for w in words]
    return replace(segment, start=round(segment.start, 3), end=round(segment.end, 3), words=words)


def to_output(result: outputs.Result) -> Output:
    t = result.transcript
    segments = [rounded(s) for s in t.segments]
    languages = None
    if result.languages is not None:
        languages = [LanguageOut(code, p) for code, p in result.languages]
    files = {name: Path(path) for name, path in result.files.items()}
    return Output(
        text=t.text,
        language=t.language,
        language_probability=t.language_probability,
        duration=round(t.duration, 3),
        segments=segments,
        detected_languages=languages,
        **files,
    )
