from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from whisper_ft import archive, cache, weights
from whisper_ft.weights import ModelError


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setattr(cache, "WEIGHTS_DIR", folder)
    return folder


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    """The layout of a trained archive, made from tiny.en without training."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(weights.embedded_ct2("tiny.en"), root / "ct2")
    shutil.copytree(weights.embedded_hf("tiny.en"), root / "hf")
    (root / "manifest.json").write_text(
        json.dumps({"format": archive.FORMAT, "base_model": "tiny.en"})
    )
    return root


def test_pack_and_serve(model_root, weights_dir, tmp_path):
    path = archive.pack(model_root, tmp_path / "weights.tar")
    assert not list(tmp_path.glob("*.partial"))
    assert weights.ct2_model(str(path)) == archive.open_archive(str(path)).ct2
    assert (weights.hf_model(str(path)) / "model.safetensors").is_file()


def tar_with(tmp_path, entries) -> str:
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def file_entry(name: str, data: bytes = b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_path_traversal_is_refused(weights_dir, tmp_path):
    spec = tar_with(tmp_path, [file_entry("../../evil.txt")])
    with pytest.raises(ModelError, match="unsafe path"):
        archive.open_archive(spec)
    assert not (tmp_path / "evil.txt").exists()


def test_absolute_path_is_refused(weights_dir, tmp_path):
    with pytest.raises(ModelError, match="unsafe path"):
        archive.open_archive(tar_with(tmp_path, [file_entry("/tmp/evil.txt")]))


def test_symlink_is_refused(weights_dir, tmp_path):
    link = tarfile.TarInfo("ct2/model.bin")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(ModelError, match="link"):
        archive.open_archive(tar_with(tmp_path, [(link, None)]))


def test_missing_files_leave_nothing_behind(weights_dir, tmp_path):
    spec = tar_with(tmp_path, [file_entry("manifest.json", b"{}")])
    with pytest.raises(ModelError, match="misses ct2/model.bin"):
        archive.open_archive(spec)
    assert not list((weights_dir / "archives").iterdir())


def test_corrupt_archive(weights_dir, tmp_path):
    path = tmp_path / "weights.tar"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(ModelError, match="not a readable weights archive"):
        archive.open_archive(str(path))


def test_unreachable_url(weights_dir):
    with pytest.raises(ModelError, match="cannot download the weights archive"):
        archive.open_archive("http://127.0.0.1:9/weights.tar")


def test_model_from_another_base_is_refused(model_root, weights_dir, tmp_path):
    root = tmp_path / "mixed"
    shutil.copytree(model_root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["architecture"] = {**archive.architecture(root / "hf"), "d_model": 512}  # base's
    manifest["base_model"] = "base"
    (root / "manifest.json").write_text(json.dumps(manifest))
    path = archive.pack(root, tmp_path / "mixed.tar")
    with pytest.raises(ModelError, match="manifest says was trained from 'base'"):
        archive.open_archive(str(path))
    assert not list((weights_dir / "archives").iterdir())  # nothing cached
