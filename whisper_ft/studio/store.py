"""The studio's files: recordings with their cues, the training set, trained models.

    <data>/recordings/<id>/meta.json   name, duration, status, in_training_set, ...
    <data>/recordings/<id>/audio.wav   the upload decoded to 16 kHz mono (what is played)
    <data>/recordings/<id>/cues.json   the cues being corrected, saved at every edit
    <data>/training/train.zip          the training set, in the layout `train` accepts
    <data>/models/<id>/weights.tar     a model trained here, and report.json

Every write goes to a temporary file first and is then renamed over the old one, so a crash
or a closed tab never leaves half a file. Ids are made here; a user's file name is shown,
never used as a path.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from pathlib import Path

from whisper_ft.audio import SAMPLE_RATE, AudioError, load_audio, write_audio
from whisper_ft.outputs import DatasetWriter, safe_stem
from whisper_ft.subtitles import Cue

ID_LENGTH = 12


class StudioError(ValueError):
    """A request the studio cannot do; the message says what to fix."""


def new_id() -> str:
    return uuid.uuid4().hex[:ID_LENGTH]


def write_json(path: Path, value) -> None:
    """Write JSON atomically: a temporary file in the same folder, renamed over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        for folder in ("recordings", "models", "training", "uploads", "jobs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for meta in self.recordings():  # a job cut short by a restart is not running now
            if meta["status"] == "transcribing":
                status = "transcribed" if self.cues(meta["id"])["cues"] else "new"
                self.update_meta(meta["id"], status=status)

    # ---------------------------------------------------------------- recordings

    def folder(self, recording_id: str) -> Path:
        folder = self.root / "recordings" / recording_id
        if not (recording_id.isalnum() and (folder / "meta.json").is_file()):
            raise StudioError(f"no recording {recording_id!r}")
        return folder

    def add_recording(self, name: str, upload: Path) -> dict:
        """Decode an uploaded file (any audio or video) into a new recording; the upload is
        removed either way. Raises AudioError, naming what is wrong, for anything else."""
        name = Path(name).name[:200] or "recording"
        try:
            audio = load_audio(upload)
        except AudioError as e:  # the message names the file as the user knows it
            raise AudioError(str(e).replace(upload.name, name, 1)) from None
        finally:
            upload.unlink(missing_ok=True)
        recording_id = new_id()
        folder = self.root / "recordings" / recording_id
        folder.mkdir()
        write_audio(folder / "audio.wav", audio)
        meta = {
            "id": recording_id,
            "name": name,
            "duration": round(audio.size / SAMPLE_RATE, 3),
            "status": "new",
            "in_training_set": False,
        }
        write_json(folder / "meta.json", meta)
        return meta

    def recordings(self) -> list[dict]:
        metas = [read_json(p / "meta.json") for p in (self.root / "recordings").iterdir()]
        return sorted((m for m in metas if m), key=lambda m: m["name"])

    def meta(self, recording_id: str) -> dict:
        return read_json(self.folder(recording_id) / "meta.json")

    def update_meta(self, recording_id: str, **fields) -> dict:
        with self._lock:
            meta = {**self.meta(recording_id), **fields}
            write_json(self.folder(recording_id) / "meta.json", meta)
        return meta

    def audio_path(self, recording_id: str) -> Path:
        return self.folder(recording_id) / "audio.wav"

    def cues(self, recording_id: str) -> dict:
        """{"version": n, "cues": [...]}: the cues as last saved."""
        return read_json(self.folder(recording_id) / "cues.json", {"version": 0, "cues": []})

    def save_cues(self, recording_id: str, cues: list[dict], edited: bool = True) -> dict:
        """Save the whole cue list (each edit sends it); checked so that it stays usable."""
        clean = [check_cue(k, c) for k, c in enumerate(cues)]
        with self._lock:
            saved = {"version": self.cues(recording_id)["version"] + 1, "cues": clean}
            write_json(self.folder(recording_id) / "cues.json", saved)
        if edited:
            self.update_meta(recording_id, status="corrected")
        return saved

    # ---------------------------------------------------------------- the training set

    def build_training_set(self) -> dict:
        """One zip of <=30 s clips with their corrected VTT, from every recording marked for
        the training set: the `dataset` task's writer, so `train` reads it as it reads that
        task's zips."""
        chosen = [m for m in self.recordings() if m.get("in_training_set")]
        if not chosen:
            raise StudioError("no recording is in the training set: add corrected recordings")
        target = self.root / "training" / "train.zip"
        tmp = target.with_suffix(".zip.tmp")
        seconds = 0.0
        with DatasetWriter(tmp, "clip") as writer:
            for meta in chosen:
                cues = [
                    Cue(c["start"], c["end"], c["text"])
                    for c in self.cues(meta["id"])["cues"]
                    if c["text"].strip()
                ]
                if not cues:
                    raise StudioError(f"{meta['name']}: has no transcript yet; transcribe it")
                audio = load_audio(self.audio_path(meta["id"]))
                writer.add_piece(0.0, audio, cues, stem=safe_stem(Path(meta["name"])))
                seconds += sum(c.end - c.start for c in cues)
        os.replace(tmp, target)
        return {
            "recordings": len(chosen),
            "clips": writer.count,
            "speech_seconds": round(seconds, 1),
            "path": str(target),
        }

    # ---------------------------------------------------------------- models

    def models(self) -> list[dict]:
        found = []
        for folder in sorted((self.root / "models").iterdir()):
            report = read_json(folder / "report.json")
            if report and (folder / "weights.tar").is_file():
                found.append(report)
        return found

    def model_path(self, model_id: str) -> Path:
        path = self.root / "models" / model_id / "weights.tar"
        if not (model_id.isalnum() and path.is_file()):
            raise StudioError(f"no trained model {model_id!r}")
        return path

    def new_model_folder(self) -> tuple[str, Path]:
        model_id = new_id()
        folder = self.root / "models" / model_id
        folder.mkdir()
        return model_id, folder


def check_cue(index: int, cue: dict) -> dict:
    """A cue from the page: start <= end, times within reason, text a string."""
    try:
        start, end = float(cue["start"]), float(cue["end"])
        text = str(cue["text"])
    except (KeyError, TypeError, ValueError) as e:
        raise StudioError(f"cue {index + 1}: needs a start, an end and a text ({e})") from e
    if not 0 <= start <= end:
        raise StudioError(f"cue {index + 1}: starts at {start} but ends at {end}")
    words = cue.get("words") or []
    return {
        "start": round(start, 3),
        "end": round(end, 3),
        "text": text,
        "words": words if isinstance(words, list) else [],
    }
