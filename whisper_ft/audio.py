"""Decode any audio or video file to 16 kHz mono float32, streaming.

Why PyAV: its wheels bundle FFmpeg, so every container and codec FFmpeg reads (wav, flac,
mp3, m4a/aac, ogg/opus, webm, mp4 video with an audio track) decodes with no system
package and no temporary copy. Decoding is a generator of short blocks, so hours of audio
never need to sit in memory at once; `load_audio` joins the blocks for clips that fit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

# Whisper's input, named as in openai/whisper's audio.py; every module reads them from here.
SAMPLE_RATE = 16000  # Whisper's input rate, in Hz
CHUNK_LENGTH = 30  # seconds of audio in one Whisper window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30-second window
N_FFT = 400  # the log-Mel spectrogram's window, in samples
HOP_LENGTH = 160  # ... and its step: 10 ms
TIME_PRECISION = 0.02  # seconds per timestamp token (<|0.00|>, <|0.02|>, ... <|30.00|>)
MULTILINGUAL_VOCAB = 51865  # openai/whisper: a vocabulary this large or larger is multilingual

# Two silence levels, for two decisions (peak sample amplitude, full scale 1.0):
SILENT_PEAK = 1e-4  # about -80 dBFS: no sound at all, a training recording to reject
QUIET_PEAK = 1e-3  # -60 dBFS: nothing to transcribe (Whisper invents words on such audio)

BLOCK_SECONDS = 60  # decode in blocks of one minute: small enough to stream, big enough to be fast


class AudioError(ValueError):
    """The file cannot be used as audio; the message says why and what to do."""


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise AudioError(f"{path.name}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path.name}: the file is empty (0 bytes); upload an audio or video file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise AudioError(
            f"{path.name}: not a readable audio or video file ({e.strerror or e}); "
            "use wav, flac, mp3, m4a, ogg, opus, webm or mp4"
        ) from e
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path.name}: the file has no audio track")
    return container


def probe_duration(path: str | os.PathLike) -> float | None:
    """Duration in seconds from the container header, or None when the header does not say."""
    with _open(Path(path)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
    return None


def stream_audio(
    path: str | os.PathLike,
    *,
    block_seconds: float = BLOCK_SECONDS,
    max_duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield the audio as consecutive float32 blocks of `block_seconds` (the last one shorter).

    Raises AudioError for a missing, empty, corrupt or audio-less file, a file that decodes
    to no samples, and audio longer than `max_duration` seconds.
    """
    path = Path(path)
    limit = None if max_duration is None else int(max_duration * SAMPLE_RATE)
    blocks = _Blocks(int(block_seconds * SAMPLE_RATE))
    total = 0
    with _open(path) as container:
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for samples in _resampled(resampler, _frames(container, stream)):
                total += samples.size
                if limit is not None and total > limit:
                    raise AudioError(
                        f"{path.name}: audio is longer than the limit of "
                        f"{max_duration:.0f} s; cut it into shorter files"
                    )
                blocks.add(samples)
                yield from blocks.full()
            for samples in _resampled(resampler, [None]):  # flush the resampler's tail
                total += samples.size
                blocks.add(samples)
        except av.error.FFmpegError as e:
            raise AudioError(
                f"{path.name}: the audio is corrupt and cannot be decoded ({e})"
            ) from e
    if total == 0:
        raise AudioError(f"{path.name}: the file holds no audio samples (0 s of audio)")
    if blocks.size:
        yield blocks.rest()


def _resampled(resampler: av.AudioResampler, frames: Iterable) -> Iterator[np.ndarray]:
    """The frames' samples at 16 kHz mono (a None frame flushes the resampler)."""
    for frame in frames:
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1)


class _Blocks:
    """Decoded samples gathered and handed out in blocks of a fixed size."""

    def __init__(self, block: int):
        self.block = block
        self.parts: list[np.ndarray] = []
        self.size = 0

    def add(self, samples: np.ndarray) -> None:
        self.parts.append(samples)
        self.size += samples.size

    def full(self) -> Iterator[np.ndarray]:
        """Every whole block gathered so far; the rest waits for more samples."""
        while self.size >= self.block:
            joined = np.concatenate(self.parts)
            yield joined[: self.block]
            rest = joined[self.block :]
            self.parts, self.size = ([rest], rest.size) if rest.size else ([], 0)

    def rest(self) -> np.ndarray:
        return np.concatenate(self.parts)


def _frames(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator:
    """Decode frames, skipping damaged packets in the middle as FFmpeg's CLI does."""
    bad = 0
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            bad += 1
            if bad > 100:
                raise
    if bad:
        logger.warning("skipped %d damaged audio packets", bad)


def load_audio(path: str | os.PathLike, *, max_duration: float | None = None) -> np.ndarray:
    """The whole file as one float32 array at 16 kHz mono (for clips that fit in memory)."""
    return np.concatenate(list(stream_audio(path, max_duration=max_duration)))


def write_audio(path: str | os.PathLike, audio: np.ndarray) -> None:
    """Write 16 kHz mono float32 samples as WAV or FLAC (chosen by the file suffix)."""
    import soundfile

    soundfile.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
