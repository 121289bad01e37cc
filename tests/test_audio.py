from __future__ import annotations

import numpy as np
import pytest

from tests.speech import encode, encode_video, silence
from whisper_ft.audio import SAMPLE_RATE, AudioError, load_audio, probe_duration, stream_audio


@pytest.fixture(scope="module")
def source(speech_wav) -> np.ndarray:
    return load_audio(speech_wav)


def test_wav_decodes_to_16k_mono_float32(source):
    assert source.dtype == np.float32
    assert source.ndim == 1
    assert 2.0 < source.size / SAMPLE_RATE < 5.0
    assert 0.05 < np.abs(source).max() <= 1.0


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm"])
def test_every_format_decodes_to_the_same_speech(source, tmp_path, suffix):
    path = encode(source, tmp_path / f"clip{suffix}", stereo=suffix == ".mp3")
    decoded = load_audio(path)
    # Lossy codecs add encoder delay and padding: the length agrees within 0.1 s ...
    assert abs(decoded.size - source.size) < 0.1 * SAMPLE_RATE
    # ... and the waveform still follows the original (peak cross-correlation).
    n = min(decoded.size, source.size)
    best = max(
        np.corrcoef(decoded[lag : lag + n - 4000], source[: n - 4000])[0, 1]
        for lag in range(0, 3000, 16)
    )
    assert best > 0.8, f"{suffix}: decoded audio does not match the source (r={best:.2f})"


def test_video_with_audio_track(source, tmp_path):
    decoded = load_audio(encode_video(source, tmp_path / "talk.mp4", seconds=1.0))
    assert abs(decoded.size - source.size) < 0.1 * SAMPLE_RATE


def test_video_without_audio_track(tmp_path):
    path = encode_video(None, tmp_path / "silent-film.mp4")
    with pytest.raises(AudioError, match="no audio track"):
        load_audio(path)


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.mp3"
    path.touch()
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


def test_text_file_renamed_as_mp3(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("these are my meeting notes, not audio\n" * 20)
    with pytest.raises(AudioError, match="not a readable audio"):
        load_audio(path)


def test_corrupt_file(source, tmp_path):
    path = encode(source, tmp_path / "clip.flac")
    data = path.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, len(data) - 200, dtype=np.uint8)
    path.write_bytes(data[:200] + noise.tobytes())  # a valid header, then garbage
    with pytest.raises(AudioError, match="corrupt|no audio samples"):
        load_audio(path)


def test_truncated_mp3_decodes_what_is_there(source, tmp_path):
    path = encode(source, tmp_path / "clip.mp3")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    decoded = load_audio(path)
    assert 0.3 * source.size < decoded.size < 0.7 * source.size


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_duration_limit(source, tmp_path):
    path = encode(np.concatenate([source, silence(5)]), tmp_path / "long.wav")
    with pytest.raises(AudioError, match="longer than the limit of 4 s"):
        load_audio(path, max_duration=4)
    assert load_audio(path, max_duration=60).size > 0


def test_streams_in_blocks(source, tmp_path):
    audio = np.concatenate([source] * 4)
    path = encode(audio, tmp_path / "four.flac")
    blocks = list(stream_audio(path, block_seconds=2.5))
    assert all(b.size == 2.5 * SAMPLE_RATE for b in blocks[:-1])
    assert 0 < blocks[-1].size <= 2.5 * SAMPLE_RATE
    assert np.allclose(np.concatenate(blocks), load_audio(path))


def test_probe_duration(source, tmp_path):
    path = encode(source, tmp_path / "clip.flac")
    assert probe_duration(path) == pytest.approx(source.size / SAMPLE_RATE, abs=0.05)
