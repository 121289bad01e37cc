"""Training that grows past one process: resumable runs, and data-parallel training; and
what the trained change keeps (`lora_encoder_scale`), against the same run kept whole.

Every run here is the project's command line, started as a user starts it: `python -m
whisper_ft train`, or the same under `torchrun` with two processes on CPU (gloo). The data is
a small new-vocabulary set (tests/vocab.py), trained for two short epochs of tiny.en.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import vocab
from whisper_ft.weights import hf_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ("base_model=tiny.en", "num_train_epochs=2", "batch_size=4", "seed=3")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Four recordings (24 sentences in two voices): three train, one validates."""
    folder = tmp_path_factory.mktemp("scale")
    return vocab.training_zip(folder, voices=vocab.TRAIN_VOICES[:2])


def command(data: Path, out: Path, *inputs: str, processes: int = 1) -> list[str]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    args = [f"train_data=@{data}", *RECIPE, *inputs]
    return [
        *launcher,
        "-m",
        "whisper_ft",
        "train",
        *(x for a in args for x in ("-i", a)),
        "-o",
        str(out),
    ]


def train(data: Path, out: Path, *inputs: str, processes: int = 1) -> tuple[dict, Path]:
    """Run a training to its end; its manifest and the archive's folder."""
    run = subprocess.run(
        command(data, out, *inputs, processes=processes),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TMPDIR": str(out.parent)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    archive = Path(json.loads(run.stdout)["weights"])
    unpacked = out / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    return json.loads((unpacked / "manifest.json").read_text()), unpacked


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> tuple[dict, Path]:
    return train(data, tmp_path_factory.mktemp("one") / "out")


def test_the_encoders_change_kept_at_a_fraction(data, uninterrupted, tmp_path):
    """lora_encoder_scale=0.45: the same run, its encoder's weights half as far from the
    base model's as the default keeps them (0.9 of the trained change, tiny taught new
    words), its decoder's as trained; served and exported so."""
    assert uninterrupted[0]["lora"]["encoder_scale"] == 0.9  # chosen for a tiny model
    manifest, unpacked = train(data, tmp_path / "out", "lora_encoder_scale=0.45")
    assert manifest["lora"]["encoder_scale"] == 0.45
    assert manifest["best_epoch"] == uninterrupted[0]["best_epoch"]
    kept = load_file(str(uninterrupted[1] / "hf/model.safetensors"))
    half = load_file(str(unpacked / "hf/model.safetensors"))
    base = load_file(str(hf_model("tiny.en") / "model.safetensors"))
    trained = [name for name in kept if not torch.equal(kept[name], base[name])]
    encoder = [name for name in trained if ".encoder." in name]
    assert encoder and len(encoder) < len(trained)  # both stacks were trained
    for name in trained:
        expected = (base[name] + kept[name]) / 2 if name in encoder else kept[name]
        torch.testing.assert_close(half[name], expected, atol=1e-5, rtol=0, msg=name)


def same_weights(a: Path, b: Path) -> bool:
    first, second = (
        load_file(str(a / "hf/model.safetensors")),
        load_file(str(b / "hf/model.safetensors")),
    )
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def stopped_run(data: Path, folder: Path, when: str, how: signal.Signals) -> dict:
    """Start a training that keeps its state, signal it once its log matches `when`; the
    position its state was saved at."""
    state, log = folder / "state", folder / "stopped.log"
    with open(log, "w") as f:
        process = subprocess.Popen(
            command(data, folder / "stopped", f"state_dir={state}"),
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(folder)},
        )
        deadline = time.monotonic() + 600
        while not re.search(when, log.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        process.send_signal(how)
        assert process.wait(timeout=120) != 0
    return json.loads((state / "state.json").read_text())["position"]


def resumes_to(uninterrupted, data: Path, folder: Path) -> None:
    """Resumed from folder/state, the run ends with the uninterrupted run's losses, WER and
    weights."""
    manifest, unpacked = train(data, folder / "resumed", f"resume_from={folder / 'state'}")
    expected, expected_dir = uninterrupted
    assert [e["loss"] for e in manifest["history"]] == pytest.approx(
        [e["loss"] for e in expected["history"]], abs=1e-6
    )
    assert manifest["wer_after"] == expected["wer_after"]
    assert same_weights(unpacked, expected_dir)


def test_a_killed_run_resumes_to_the_same_result(data, uninterrupted, tmp_path):
    """Killed in its second epoch (SIGKILL: no chance to save), the run continues from the
    state saved after its first epoch and ends with the uninterrupted run's weights."""
    position = stopped_run(data, tmp_path, r"step \d+/\d+  epoch 2 ", signal.SIGKILL)
    assert position["epoch"] == 2 and position["steps_in_epoch"] == 0, position
    resumes_to(uninterrupted, data, tmp_path)


def test_an_interrupted_run_keeps_its_state_mid_epoch_and_resumes(data, uninterrupted, tmp_path):
    """Stopped mid-epoch (SIGTERM, as a job runner stops it), the run saves where it stood
    after its last whole step; resumed, it ends where the uninterrupted run ended."""
    position = stopped_run(data, tmp_path, r"step 2/\d+  epoch 1 ", signal.SIGTERM)
    assert position["epoch"] == 1 and position["steps_in_epoch"] >= 2, position
    resumes_to(uninterrupted, data, tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d, "is not a run state (no state.json)"),
        (lambda d: (d / "state.json").write_text("{}") and d, "is not a whisper-ft-run-state/1"),
    ],
)
def test_resume_from_something_else_fails_clearly(data, tmp_path, make, message):
    folder = tmp_path / "not-a-state"
    folder.mkdir()
    run = subprocess.run(
        command(data, tmp_path / "out", f"resume_from={make(folder)}"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]


def test_resume_from_another_run_fails_clearly(data, tmp_path):
    state = tmp_path / "state"
    train(data, tmp_path / "first", f"state_dir={state}", "max_steps=2")
    run = subprocess.run(
        command(
            data, tmp_path / "out", f"resume_from={state}", "max_steps=2", "learning_rate=1e-4"
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "from another run" in run.stderr and "learning_rate" in run.stderr, run.stderr[-2000:]


def test_two_processes_share_the_data_and_learn_the_same(data, uninterrupted, tmp_path):
    """`torchrun --nproc-per-node=2` on CPU: each process trains on its own half of every
    epoch, the gradients are averaged (gloo), and the main process alone writes one archive
    that learned as the one-process run did."""
    manifest, unpacked = train(data, tmp_path / "out", processes=2)
    expected, _ = uninterrupted
    assert manifest["vocabulary"] == expected["vocabulary"]
    for epoch in manifest["history"]:
        shares = epoch["processes"]
        assert len(shares["examples"]) == 2 and min(shares["examples"]) > 0, shares
        assert shares["on_several"] < min(shares["examples"]) / 2, shares  # different data
    assert manifest["wer_after"] < manifest["wer_before"]
    assert manifest["wer_after"] <= expected["wer_after"] + 15.0
    assert len(list((tmp_path / "out").glob("*.tar"))) == 1


def test_cog_training_starts_a_process_per_gpu(data, tmp_path):
    """Cog calls train() in one process; with several GPUs it trains with one process per
    GPU. WHISPER_FT_TRAIN_PROCESSES=2 asks the same of a machine without GPUs (gloo): the
    training succeeds through Cog's HTTP server with two processes, and bad data still fails
    with its own message."""
    import base64

    from tests.cog_server import data_url, ready_server

    env = {"WHISPER_FT_TRAIN_PROCESSES": "2"}
    with ready_server(tmp_path / "train.log", train=True, env=env) as server:
        result = server.train(
            train_data=data_url(data, "application/zip"),
            base_model="tiny.en",
            num_train_epochs=1,
            batch_size=4,
        )
        assert result["status"] == "succeeded", result.get("error")
        assert "training with 2 processes" in result["logs"]
        assert "x 2 processes" in result["logs"]
        archive = tmp_path / "weights.tar"
        archive.write_bytes(base64.b64decode(result["output"]["weights"].split(",", 1)[1]))
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest["history"][0]["processes"]["examples"][1] > 0

        empty = data_url(unpaired_zip(tmp_path), "application/zip")
        failed = server.train(train_data=empty, base_model="tiny.en")
        assert failed["status"] == "failed" and "has no audio file" in failed["error"], failed
        assert server.wait_ready(timeout=30)["status"] == "READY"


def unpaired_zip(folder: Path) -> Path:
    """A zip whose only transcript has no audio beside it."""
    import zipfile

    path = folder / "unpaired.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("talk.vtt", "WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n")
    return path
