"""The Predictor behind Cog's real HTTP server (coglet), as a Cog container runs it."""

from __future__ import annotations

import base64
import functools
import http.server
import threading
import zipfile

import pytest

from tests.cog_server import data_url
from tests.conftest import SENTENCE, STORY
from whisper_ft.subtitles import parse_srt, parse_vtt, rule_breaks
from whisper_ft.wer import normalizer


def file_output(value: str) -> bytes:
    """Cog returns files as data URLs when no upload URL is configured."""
    assert value.startswith("data:"), value[:60]
    return base64.b64decode(value.split(",", 1)[1])


@pytest.fixture(scope="module")
def server(tiny_server):
    return tiny_server


@pytest.fixture(scope="module")
def file_server(speech_wav, story_wav):
    """A plain HTTP file server, so audio can be passed as a URL."""
    folder = speech_wav.parent
    (folder / "story.wav").write_bytes(story_wav.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def words(text: str) -> list[str]:
    return normalizer("en")(text).split()


def check_segments(output: dict) -> None:
    previous_end = 0.0
    for segment in output["segments"]:
        assert (
            previous_end - 0.01 <= segment["start"] <= segment["end"] <= output["duration"] + 0.01
        )
        previous_end = segment["end"]


def test_transcribes_a_data_url(server, speech_wav):
    result = server.predict(
        audio=data_url(speech_wav, "audio/wav"), output_formats="txt,srt,vtt,json"
    )
    assert result["status"] == "succeeded", result.get("error")
    output = result["output"]
    # tiny.en reads espeak's "brown fox jumps" as "round fox jump" with some processors'
    # int8 kernels: every other word of the sentence must be there.
    assert len(set(words(SENTENCE)) - set(words(output["text"]))) <= 2, output["text"]
    assert output["language"] == "en"
    check_segments(output)
    assert file_output(output["txt"]).decode().strip() == output["text"]


def test_long_audio_by_url_with_subtitles_that_parse_back(server, file_server):
    result = server.predict(
        audio=f"{file_server}/story.wav", output_formats="srt,vtt", word_timestamps=True
    )
    assert result["status"] == "succeeded", result.get("error")
    output = result["output"]
    spoken = set(w for s in STORY for w in words(s))
    heard = set(words(output["text"]))
    assert len(spoken & heard) / len(spoken) > 0.85, output["text"]
    assert output["duration"] == pytest.approx(len(STORY) + 25, abs=15)
    check_segments(output)
    for segment in output["segments"]:
        for word in segment["words"]:
            assert segment["start"] - 0.01 <= word["start"] <= word["end"] <= segment["end"] + 0.01
    spoken_words = [w for s in output["segments"] for w in s["words"]]
    for cues in (
        parse_srt(file_output(output["srt"]).decode()),
        parse_vtt(file_output(output["vtt"]).decode()),
    ):
        # The same words, in readable cues that each start with their first word.
        assert " ".join(c.text for c in cues).split() == output["text"].split()
        starts = {round(w["start"], 3) for w in spoken_words}
        assert all(round(c.start, 3) in starts for c in cues)
        assert not any(b - {"too_short"} for b in rule_breaks(cues))
    assert file_output(output["vtt"]).startswith(b"WEBVTT")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"audio": data_url(b"not audio" * 50, "audio/mpeg")},
            "not a readable audio or video file",
        ),
        ({"task": "sing"}, "task: 'sing' is not allowed; choose one of: transcribe"),
        ({"language": "klingon"}, "language: unknown language 'klingon'"),
        ({"language": "fr"}, "English-only"),
        ({"task": "translate"}, "translate needs a multilingual model"),
        ({"output_formats": "docx"}, "output_formats: unknown format docx"),
        ({"beam_size": 0}, "beam_size: 0 is below the minimum of 1"),
        ({"temperature": 3}, "temperature: 3.0 is above the maximum of 1.0"),
    ],
)
def test_bad_input_fails_clearly_and_the_server_keeps_serving(server, speech_wav, inputs, message):
    result = server.predict(**{"audio": data_url(speech_wav, "audio/wav"), **inputs})
    assert result["status"] == "failed"
    assert message in result["error"]
    assert server.wait_ready(timeout=30)["status"] == "READY"
    again = server.predict(audio=data_url(speech_wav, "audio/wav"), output_formats="")
    assert again["status"] == "succeeded"
    assert "fox" in again["output"]["text"].lower()


def test_dataset_task_gives_clips_that_training_accepts(server, file_server, tmp_path):
    from whisper_ft.dataset import load_dataset

    result = server.predict(audio=f"{file_server}/story.wav", task="dataset")
    assert result["status"] == "succeeded", result.get("error")
    archive = tmp_path / "dataset.zip"
    archive.write_bytes(file_output(result["output"]["dataset"]))
    names = zipfile.ZipFile(archive).namelist()
    assert any(n.endswith(".wav") for n in names) and any(n.endswith(".vtt") for n in names)
    dataset = load_dataset(archive, tmp_path / "work", validation_fraction=0)
    assert dataset.train
    assert all(e.audio.size <= 30 * 16000 for e in dataset.train)
    assert "fox" in " ".join(e.text for e in dataset.train).lower()


def test_detect_language_on_an_english_only_model(server, speech_wav):
    result = server.predict(audio=data_url(speech_wav, "audio/wav"), task="detect_language")
    assert result["status"] == "succeeded"
    assert result["output"]["language"] == "en"
    assert result["output"]["detected_languages"][0]["language"] == "en"
