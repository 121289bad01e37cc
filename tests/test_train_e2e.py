"""End to end, as a user does it: train through Cog's HTTP server, then serve the weights.

The dataset teaches tiny.en four invented product names (tests/vocab.py). The checks run on
held-out sentences that are not in the training set, spoken by a voice it never heard.
"""

from __future__ import annotations

import base64
import zipfile
from pathlib import Path

import pytest

from tests import vocab
from tests.cog_server import CogServer, data_url, ready_server
from whisper_ft.finetune import LORA_MODULES
from whisper_ft.wer import word_error_rate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("vocab")
    return {
        "zip": vocab.training_zip(folder),
        "general_zip": vocab.general_zip(folder),
        "held_out": vocab.held_out(folder),
        "general": vocab.general(folder),
    }


@pytest.fixture(scope="module")
def archive(data, tmp_path_factory) -> Path:
    """Train once, through `python -m cog.server.http --x-mode train`, with general speech
    replayed and scored, the default recipe: the data teaches new names, so every projection
    is adapted, the change held off the training and general speech."""
    folder = tmp_path_factory.mktemp("train")
    with ready_server(folder / "train.log", train=True) as server:
        result = server.train(
            train_data=data_url(data["zip"], "application/zip"),
            general_data=data_url(data["general_zip"], "application/zip"),
            base_model="tiny.en",
        )
        assert result["status"] == "succeeded", result.get("error")
        assert "validation WER before training" in result["logs"]
        assert "general speech WER before training" in result["logs"]
        assert "step 1/" in result["logs"]
        # With no upload URL configured, Cog returns output files inline, as data URLs.
        weights = result["output"]["weights"]
        assert weights.startswith("data:"), weights[:200]
        path = folder / "weights.tar"
        path.write_bytes(base64.b64decode(weights.split(",", 1)[1]))
        return path


def test_archive_holds_both_forms_and_a_manifest(archive):
    import json
    import tarfile

    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"ct2/model.bin", "hf/model.safetensors", "hf/config.json"} <= names
    assert manifest["base_model"] == "tiny.en"
    assert manifest["wer_after"] <= manifest["wer_before"]
    assert manifest["dataset"]["recordings"] >= 10
    general = manifest["general_data"]
    assert general["replayed_windows"] == 1 and general["scored_windows"] == 1
    assert general["wer_before"] is not None and general["wer_after"] is not None
    assert all("general_wer" in epoch for epoch in manifest["history"])
    # The names the base model missed in the transcripts, and nothing else, are served.
    assert set(manifest["vocabulary"]) == set(vocab.TERMS), manifest["vocabulary"]
    # The inputs left empty, as the run chose them for data that teaches new words.
    assert manifest["lora"]["target_modules"] == list(LORA_MODULES)
    assert manifest["lora"]["layers"] == "upper"  # tiny.en: its encoder's lower half kept
    assert manifest["train"]["learning_rate"] == 1e-3
    assert manifest["train"]["change_weight"] == 1000


def transcribe_all(server: CogServer, utterances, **inputs) -> list[dict]:
    outputs = []
    for u in utterances:
        result = server.predict(audio=data_url(u.path, "audio/wav"), output_formats="srt", **inputs)
        assert result["status"] == "succeeded", result.get("error")
        outputs.append(result["output"])
    return outputs


@pytest.fixture(scope="module")
def served(archive, data, tmp_path_factory) -> dict:
    """Held-out and general transcripts from the base model and from the trained weights."""
    folder = tmp_path_factory.mktemp("serve")
    found = {}
    for name, env in (
        ("base", {"WHISPER_FT_MODEL": "tiny.en"}),
        ("tuned", {"COG_WEIGHTS": str(archive)}),
    ):
        with ready_server(folder / f"{name}.log", env=env) as server:
            found[name] = {
                "held_out": transcribe_all(server, data["held_out"]),
                "general": transcribe_all(server, data["general"]),
            }
            if name == "tuned":
                found[name]["prompted"] = transcribe_all(
                    server, data["held_out"], use_vocabulary=True
                )
        found[name]["log"] = (folder / f"{name}.log").read_text(errors="replace")
    return found


def test_tuned_model_spells_the_new_names_on_held_out_sentences(served, data):
    base = vocab.term_recall([o["text"] for o in served["base"]["held_out"]], data["held_out"])
    tuned = vocab.term_recall([o["text"] for o in served["tuned"]["held_out"]], data["held_out"])
    assert base <= 0.25, "the base model already knows the names: the test proves nothing"
    assert tuned >= 0.75, [o["text"] for o in served["tuned"]["held_out"]]


def test_taught_words_as_hotwords_on_request(served, data):
    """use_vocabulary reads the manifest's words as a prompt (a base model has none)."""
    prompted = [o["text"] for o in served["tuned"]["prompted"]]
    assert vocab.term_recall(prompted, data["held_out"]) >= 0.75, prompted


def test_tuned_model_names_its_taught_words(served):
    assert "taught words (in the weights" in served["tuned"]["log"]
    assert "Zentrafy" in served["tuned"]["log"]
    assert "taught words" not in served["base"]["log"]


def test_weights_alone_spell_the_new_names_in_transformers_and_faster_whisper(
    archive, data, served, tmp_path
):
    """The archive's two model folders, loaded with plain transformers and plain
    faster-whisper (no project code, no prompt), spell the names in held-out sentences."""
    import tarfile

    import soundfile
    from faster_whisper import WhisperModel
    from transformers import pipeline

    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    held_out = data["held_out"]
    audios = [soundfile.read(u.path, dtype="float32")[0] for u in held_out]
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "hf"), device="cpu")
    in_transformers = [asr({"raw": a, "sampling_rate": 16000})["text"] for a in audios]
    model = WhisperModel(str(tmp_path / "ct2"), device="cpu", compute_type="int8")
    in_faster_whisper = [
        " ".join(segment.text for segment in model.transcribe(a, language="en")[0]) for a in audios
    ]
    base = vocab.term_recall([o["text"] for o in served["base"]["held_out"]], held_out)
    assert vocab.term_recall(in_transformers, held_out) >= base + 0.5, in_transformers
    assert vocab.term_recall(in_faster_whisper, held_out) >= base + 0.5, in_faster_whisper


def test_general_speech_is_still_transcribed(served, data):
    references = [u.text for u in data["general"]]
    base = word_error_rate(references, [o["text"] for o in served["base"]["general"]], "en")
    tuned = word_error_rate(references, [o["text"] for o in served["tuned"]["general"]], "en")
    assert tuned <= max(base, 10.0) + 10.0, [o["text"] for o in served["tuned"]["general"]]


def test_timestamps_stay_sane(served):
    for output in served["tuned"]["held_out"] + served["tuned"]["general"]:
        previous = 0.0
        assert output["segments"], output
        for segment in output["segments"]:
            assert previous - 0.01 <= segment["start"] < segment["end"] <= output["duration"] + 0.05
            previous = segment["end"]
        srt = base64.b64decode(output["srt"].split(",", 1)[1]).decode()
        assert srt.startswith("1\n00:00:")


def test_training_data_zip_is_what_users_upload(data):
    names = zipfile.ZipFile(data["zip"]).namelist()
    assert any(n.endswith(".flac") for n in names) and any(n.endswith(".vtt") for n in names)
