from __future__ import annotations

import time

import pytest

from whisper_ft import cache, weights
from whisper_ft.weights import EMBEDDED, ModelError


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "WEIGHTS_DIR", tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_model_is_assembled_and_verified(weights_dir, name):
    path = weights.ct2_model(name)
    assert path == weights_dir / name / "ct2"
    for file in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        assert (path / file).is_file()
    assert cache.sha256(path / "model.bin") == EMBEDDED[name].sha256
    # Idempotent: the second call reuses the prepared directory as it is.
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert weights.ct2_model(name) == path
    assert (path / "model.bin").stat().st_mtime_ns == mtime


def test_default_spec_is_base(weights_dir):
    assert weights.ct2_model(None) == weights_dir / "base" / "ct2"


def test_checksum_mismatch_leaves_nothing_behind(weights_dir, monkeypatch):
    broken = {
        **EMBEDDED,
        "tiny.en": EMBEDDED["tiny.en"].__class__(
            **{**EMBEDDED["tiny.en"].__dict__, "sha256": "0" * 64}
        ),
    }
    monkeypatch.setattr(weights, "EMBEDDED", broken)
    with pytest.raises(ModelError, match="SHA-256"):
        weights.ct2_model("tiny.en")
    # No model directory, and no temporary directory left over, so nothing half-made loads.
    assert not (weights_dir / "tiny.en" / "ct2").exists()
    assert [p.name for p in (weights_dir / "tiny.en").iterdir()] == []


def test_crash_mid_build_leaves_no_model(weights_dir):
    def build(out):
        (out / "model.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.prepared(weights_dir / "m" / "ct2", build)
    assert not (weights_dir / "m" / "ct2").exists()
    assert list((weights_dir / "m").iterdir()) == []


def test_local_ct2_directory_is_used_as_is(weights_dir):
    path = weights.ct2_model("tiny.en")
    assert weights.ct2_model(str(path)) == path


def test_hub_id_fails_fast_offline(weights_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ModelError, match="cannot download 'openai/whisper-large-v3-turbo'"):
        weights.ct2_model("openai/whisper-large-v3-turbo")
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("spec", ["/no/such/dir", "./missing", "not a model", "a/b/c"])
def test_unknown_spec_says_what_is_accepted(weights_dir, spec):
    with pytest.raises(ModelError, match="is not a Whisper model"):
        weights.ct2_model(spec)
