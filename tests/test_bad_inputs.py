"""The bad-input catalogue, against Cog's real HTTP server in both modes.

Every case asserts the final status, that the error names the problem, and that the next
good request still succeeds: a Cog model runs unattended behind an API.
"""

from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import pytest

from tests.cog_server import CogServer, data_url, ready_server
from tests.speech import encode, encode_video, espeak, silence
from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
from whisper_ft.subtitles import Cue, write_vtt

# ---------------------------------------------------------------- predictions


@pytest.fixture(scope="module")
def server(tiny_server):
    return tiny_server


@pytest.fixture(scope="module")
def files(speech_wav, tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("bad-files")
    speech = load_audio(speech_wav)
    rng = np.random.default_rng(0)
    made = {
        "speech": speech_wav,
        "empty": folder / "empty.mp3",
        "zero": folder / "zero.wav",
        "tenth": folder / "tenth.wav",
        "silence": folder / "silence.wav",
        "noise": folder / "noise.wav",
        "text": folder / "notes.mp3",
        "truncated": folder / "cut.mp3",
        "video": folder / "silent-film.mp4",
    }
    made["empty"].touch()
    write_audio(made["zero"], np.zeros(0, np.float32))
    write_audio(made["tenth"], speech[: SAMPLE_RATE // 10])
    write_audio(made["silence"], silence(20))
    write_audio(made["noise"], rng.normal(0, 0.2, 10 * SAMPLE_RATE).astype(np.float32))
    made["text"].write_text("meeting notes, not audio\n" * 40)
    mp3 = encode(speech, folder / "full.mp3").read_bytes()
    made["truncated"].write_bytes(mp3[: len(mp3) // 2])
    encode_video(None, made["video"])
    return {name: path.read_bytes() for name, path in made.items()}


FAILS = [
    ("empty", {}, "the file is empty"),
    ("zero", {}, "no audio samples"),
    ("text", {}, "not a readable audio or video file"),
    ("video", {}, "no audio track"),
    ("speech", {"task": "sing"}, "task: 'sing' is not allowed"),
    ("speech", {"language": "klingon"}, "language: unknown language 'klingon'"),
    ("speech", {"output_formats": "txt,docx"}, "output_formats: unknown format docx"),
    ("speech", {"beam_size": -1}, "beam_size: -1 is below the minimum of 1"),
    ("speech", {"beam_size": 1000}, "beam_size: 1000 is above the maximum of 10"),
    ("speech", {"temperature": -0.5}, "temperature: -0.5 is below the minimum of 0.0"),
    ("speech", {"temperature": 1.5}, "temperature: 1.5 is above the maximum of 1.0"),
    ("speech", {"batch_size": 0}, "batch_size: 0 is below the minimum of 1"),
    ("speech", {"max_line_width": 0}, "max_line_width: 0 is below the minimum of 1"),
    ("speech", {"max_cue_seconds": 90.0}, "max_cue_seconds: 90.0 is above the maximum of 60.0"),
    ("speech", {"max_words_per_cue": -2}, "max_words_per_cue: -2 is below the minimum of 0"),
    ("speech", {"word_timestamps": "maybe"}, "word_timestamps: 'maybe' is not a valid bool"),
    ("speech", {"task": "translate"}, "translate needs a multilingual model"),
    ("speech", {"language": "de"}, "English-only and cannot transcribe 'de'"),
    ("speech", {"colour": "blue"}, "unexpected keyword argument 'colour'"),
]


@pytest.mark.parametrize(("name", "extra", "message"), FAILS, ids=[f[2][:30] for f in FAILS])
def test_prediction_fails_clearly(server, files, name, extra, message):
    result = server.predict(audio=data_url(files[name]), **extra)
    assert result["status"] == "failed", result.get("output")
    assert message in result["error"]
    good = server.predict(audio=data_url(files["speech"]), output_formats="")
    assert good["status"] == "succeeded" and "fox" in good["output"]["text"].lower()


def test_unreachable_url(server):
    result = server.predict(audio="http://127.0.0.1:9/clip.mp3")
    assert result["status"] == "failed"
    assert "clip.mp3" in result["error"] or "onnect" in result["error"]


@pytest.mark.parametrize("name", ["tenth", "silence"])
def test_too_short_or_silent_audio_gives_no_text(server, files, name):
    result = server.predict(audio=data_url(files[name]))
    assert result["status"] == "succeeded", result.get("error")
    assert result["output"]["text"] == ""


def test_noise_and_a_truncated_mp3_still_succeed(server, files):
    noise = server.predict(audio=data_url(files["noise"]))
    assert noise["status"] == "succeeded"
    truncated = server.predict(audio=data_url(files["truncated"]))
    assert truncated["status"] == "succeeded"
    assert truncated["output"]["duration"] < 3.0


# ---------------------------------------------------------------- trainings


def zip_bytes(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-train")
    (folder / "tmp").mkdir()
    with ready_server(folder / "cog.log", train=True, env={"TMPDIR": str(folder / "tmp")}) as cog:
        cog.tmp = folder / "tmp"
        yield cog


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[bytes, float]:
    path = espeak("Please open the settings.", tmp_path_factory.mktemp("clip") / "a.wav")
    return path.read_bytes(), load_audio(path).size / SAMPLE_RATE


def vtt(*cues: tuple[float, float, str]) -> bytes:
    return write_vtt([Cue(*c) for c in cues]).encode()


def train_cases(clip) -> list[tuple[str, bytes, str]]:
    wav, seconds = clip
    ok = vtt((0.0, seconds - 0.1, "Please open the settings."))
    silent = io.BytesIO()
    import soundfile

    soundfile.write(silent, silence(3), SAMPLE_RATE, format="WAV")
    many = {f"tiny/{i:04d}.txt": b"x" for i in range(2100)}
    return [
        ("empty zip", zip_bytes({}), "the zip is empty"),
        ("not a zip", b"just some text, not a zip" * 10, "not a zip file"),
        ("zip slip", zip_bytes({"../evil.wav": wav, "a.vtt": ok}), "unsafe entries"),
        ("absolute path", zip_bytes({"/etc/evil.wav": wav}), "unsafe entries"),
        ("symlink", zip_bytes({"a.wav": wav}, {"a.vtt": "/etc/passwd"}), "unsafe entries"),
        ("zip bomb", zip_bytes({"a.wav": bytes(300 * 1024 * 1024)}), "a zip bomb?"),
        ("thousands of files", zip_bytes(many), "2000"),
        ("audio without transcript", zip_bytes({"a.wav": wav}), "a.wav: has no transcript"),
        ("transcript without audio", zip_bytes({"b.vtt": ok}), "has no audio file"),
        (
            "malformed VTT",
            zip_bytes({"a.wav": wav, "a.vtt": b"WEBVTT\n\n00:00 --> soon\nhi\n"}),
            "a.vtt",
        ),
        (
            "cue past the end",
            zip_bytes({"a.wav": wav, "a.vtt": vtt((0.0, seconds + 5, "x"))}),
            "ends after the end of the audio",
        ),
        (
            "out of order",
            zip_bytes({"a.wav": wav, "a.vtt": vtt((1.0, 1.5, "b"), (0.0, 0.8, "a"))}),
            "out of order",
        ),
        (
            "overlap",
            zip_bytes({"a.wav": wav, "a.vtt": vtt((0.0, 1.2, "a"), (0.5, 1.5, "b"))}),
            "overlaps",
        ),
        (
            "non-UTF-8",
            zip_bytes(
                {
                    "a.wav": wav,
                    "a.vtt": "WEBVTT\n\n00:00.000 --> 00:01.000\ncaf\xe9\n".encode("latin-1"),
                }
            ),
            "not UTF-8",
        ),
        (
            "silent audio",
            zip_bytes({"a.wav": silent.getvalue(), "a.vtt": vtt((0.0, 2.0, "x"))}),
            "no sound",
        ),
        ("undecodable audio", zip_bytes({"a.wav": b"RIFF0000garbage" * 20, "a.vtt": ok}), "a.wav"),
        ("too small to split", zip_bytes({"a.wav": wav, "a.vtt": ok}), "too small to split"),
    ]


def test_training_data_catalogue(trainer, clip):
    """Each bad dataset fails with its own message; the trainer stays ready for the next."""
    for label, data, message in train_cases(clip):
        result = trainer.train(
            train_data=data_url(data, "application/zip"), base_model="tiny.en", max_files=2000
        )
        assert result["status"] == "failed", label
        assert message in result["error"], (label, result["error"][:500])
        assert trainer.wait_ready(timeout=30)["status"] == "READY", label
    assert not list(trainer.tmp.glob("whisper-ft-train-*")), "a failed training left files"


def test_training_inputs_are_checked(trainer, clip):
    wav, seconds = clip
    data = data_url(zip_bytes({"a.wav": wav, "a.vtt": vtt((0.0, seconds - 0.1, "x"))}))
    for extra, message in [
        ({"learning_rate": 5.0}, "learning_rate: 5.0 is above the maximum of 0.1"),
        ({"lora_rank": 0}, "lora_rank: 0 is below the minimum of 1"),
        ({"target_modules": "qkv"}, "target_modules: qkv"),
        ({"base_model": "no/such-model"}, "cannot download 'no/such-model'"),
        (
            {"more_train_data": "http://127.0.0.1:9/more.zip"},
            "more_train_data: cannot download http://127.0.0.1:9/more.zip",
        ),
        ({"more_train_data": "/no/such/data.zip"}, "more_train_data: no such file"),
        ({"resume_from": "/"}, "resume_from: / is not a run state"),
        ({"max_dataset_hours": 0}, "max_dataset_hours: 0.0 is below the minimum of 0.01"),
    ]:
        result = trainer.train(train_data=data, **extra)
        assert result["status"] == "failed"
        assert message in result["error"], result["error"][:500]


def test_weights_from_another_place_fail_setup(tmp_path):
    """A corrupt COG_WEIGHTS archive stops setup with a message; nothing is served half-made."""
    bad = tmp_path / "weights.tar"
    bad.write_bytes(b"not a tar" * 100)
    log = tmp_path / "cog.log"
    cog = CogServer(env={"COG_WEIGHTS": str(bad)}, log=log)
    try:
        health = cog.wait_ready()
        assert health["status"] == "SETUP_FAILED"
        assert "not a readable weights archive" in health["setup"]["logs"] + log.read_text()
    finally:
        cog.stop()


def test_good_request_after_all(server, files):
    assert server.predict(audio=data_url(files["speech"]))["status"] == "succeeded"
