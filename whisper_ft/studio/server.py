"""The studio: a local web page for the whole loop, from a recording to a tuned model.

    python -m whisper_ft studio                      # http://127.0.0.1:8765
    python -m whisper_ft studio --data ~/studio --port 9000
    python -m whisper_ft studio --host 0.0.0.0 --token SECRET   # other machines: token needed

Transcribe uploads, correct their cues beside the audio (every edit saved at once), export
subtitles, collect corrected recordings into a training set, train, and compare the base and
the tuned model on a new clip. The page is plain HTML and JavaScript served from
whisper_ft/studio/static (no build step); the JSON API below is all it uses. Transcription
and training run as the project's own command line in a child process (jobs.py).
"""

from __future__ import annotations

import difflib
import http.cookies
import ipaddress
import json
import logging
import re
import secrets
import shutil
import tempfile
import urllib.parse
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from whisper_ft.archive import open_archive
from whisper_ft.audio import AudioError
from whisper_ft.inputs import (
    InputError,
    check_inputs,
    declared_inputs,
    load_entry,
    parse_cli_value,
)
from whisper_ft.outputs import safe_stem, transcript_cues
from whisper_ft.studio.jobs import Job, Jobs
from whisper_ft.studio.store import Store, StudioError, write_json
from whisper_ft.subtitles import Cue, write_srt, write_txt, write_vtt
from whisper_ft.transcribe import Segment, Transcript, Word

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_MB = 2048
MAX_JSON_BYTES = 20 * 1024 * 1024
EMBEDDED_MODELS = ("base", "tiny.en")
# Training inputs the page does not offer: the data comes from the training set, the base
# model from the model picker; a run's state folder is the command line's.
NOT_IN_PAGE = (
    "train_data",
    "validation_data",
    "general_data",
    "base_model",
    "state_dir",
    "resume_from",
)
_ROUTE = re.compile(r"^/api/(?P<kind>\w+)(?:/(?P<id>[0-9a-f]{12}))?(?:/(?P<action>[\w.]+))?$")
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


class Studio:
    """The studio's state and actions, apart from HTTP (the handler below only routes)."""

    def __init__(self, data: Path, max_upload_mb: int = MAX_UPLOAD_MB):
        self.store = Store(data)
        self.jobs = Jobs(self.store.root / "jobs")
        self.max_upload = max_upload_mb * 1024 * 1024
        self._train_fn = None

    # ---------------------------------------------------------------- models and inputs

    def model_spec(self, model: str) -> str:
        """What `--weights`/`base_model` get for a model chosen in the page."""
        model = (model or "base").strip()
        if model.startswith("model:"):
            return str(self.store.model_path(model.removeprefix("model:")))
        return model

    @property
    def train_fn(self):
        if self._train_fn is None:
            self._train_fn = load_entry("train.py", "train")
        return self._train_fn

    def train_inputs(self) -> list[dict]:
        """The trainer's inputs with their defaults, bounds and help, for the page's form."""
        shown = []
        for name, (kind, info) in declared_inputs(self.train_fn).items():
            if name in NOT_IN_PAGE:
                continue
            shown.append(
                {
                    "name": name,
                    "type": kind.__name__,
                    "default": info.default,
                    "description": info.description or "",
                    "choices": info.choices,
                    "ge": info.ge,
                    "le": info.le,
                }
            )
        return shown

    def state(self) -> dict:
        return {
            "recordings": self.store.recordings(),
            "models": self.store.models(),
            "embedded_models": list(EMBEDDED_MODELS),
            "jobs": [j.view() for j in sorted(self.jobs.all.values(), key=lambda j: j.created)],
            "train_inputs": self.train_inputs(),
        }

    # ---------------------------------------------------------------- actions

    def upload(self, name: str, body, length: int) -> dict:
        if length <= 0:
            raise StudioError(f"{name or 'the file'}: the file is empty (0 bytes)")
        if length > self.max_upload:
            raise StudioError(
                f"{name}: {length / 2**20:.0f} MiB is over the studio's upload limit of "
                f"{self.max_upload / 2**20:.0f} MiB (start it with --max-upload-mb to change it)"
            )
        fd, tmp = tempfile.mkstemp(dir=self.store.root / "uploads")
        with open(fd, "wb") as f:
            left = length
            while left > 0:
                block = body.read(min(left, 1 << 20))
                if not block:
                    break
                f.write(block)
                left -= len(block)
        return self.store.add_recording(name, Path(tmp))

    def upload_url(self, url: str) -> dict:
        if not url.startswith(("http://", "https://")):
            raise StudioError(f"{url!r} is not an http(s) URL")
        name = Path(urllib.parse.urlparse(url).path).name or "download"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                length = int(response.headers.get("Content-Length") or self.max_upload)
                return self.upload(name, response, min(length, self.max_upload))
        except OSError as e:
            raise StudioError(f"could not download {url}: {e}") from e

    def transcribe(self, recording_id: str, model: str, language: str, task: str) -> Job:
        meta = self.store.meta(recording_id)
        command = [
            "predict",
            "--weights",
            self.model_spec(model),
            "-i",
            f"audio=@{self.store.audio_path(recording_id)}",
            "-i",
            f"language={language or 'auto'}",
            "-i",
            f"task={task or 'transcribe'}",
            "-i",
            "word_timestamps=true",
            "-i",
            "output_formats=",
        ]
        self.store.update_meta(recording_id, status="transcribing")

        def finish(job: Job, outputs: list[dict]) -> dict:
            cues = cues_with_confidence(outputs[0])
            self.store.save_cues(recording_id, cues, edited=False)
            self.store.update_meta(
                recording_id, status="transcribed", model=model, language=outputs[0]["language"]
            )
            return {"recording": recording_id, "cues": len(cues)}

        return self.jobs.submit("transcribe", f"Transcribe {meta['name']}", [command], finish)

    def export(self, recording_id: str, fmt: str) -> tuple[str, bytes]:
        cues = [Cue(c["start"], c["end"], c["text"]) for c in self.store.cues(recording_id)["cues"]]
        writers = {"vtt": write_vtt, "srt": write_srt, "txt": write_txt}
        if fmt not in writers:
            raise StudioError(f"unknown format {fmt!r}; use vtt, srt or txt")
        name = safe_stem(Path(self.store.meta(recording_id)["name"]))
        return f"{name}.{fmt}", writers[fmt](cues).encode("utf-8")

    def train(self, model: str, values: dict) -> Job:
        unknown = set(values) & set(NOT_IN_PAGE)
        if unknown:
            raise StudioError(f"{', '.join(sorted(unknown))}: set by the studio, not the form")
        self.check_train_inputs(values)
        summary = self.store.build_training_set()
        if summary["clips"] < 2 and float(values.get("validation_fraction", 0.1)) > 0:
            raise StudioError(
                f"the training set has {summary['clips']} clip: add another corrected "
                "recording (validation needs one), or set validation_fraction to 0"
            )
        command = ["train", "-i", f"train_data=@{summary['path']}", "-i"]
        command.append(f"base_model={self.model_spec(model)}")
        for name, value in values.items():
            command += ["-i", f"{name}={value}"]
        model_id, folder = self.store.new_model_folder()

        def finish(job: Job, outputs: list[dict]) -> dict:
            shutil.move(outputs[0]["weights"], folder / "weights.tar")
            manifest = open_archive(str(folder / "weights.tar")).manifest
            report = {
                "id": model_id,
                "name": f"tuned {manifest.base_model} #{len(self.store.models()) + 1}",
                "model": f"model:{model_id}",
                "base_model": model,
                "training_set": summary,
                **{k: getattr(manifest, k) for k in REPORTED},
            }
            write_json(folder / "report.json", report)
            return report

        return self.jobs.submit("train", f"Train on {summary['clips']} clips", [command], finish)

    def check_train_inputs(self, values: dict) -> None:
        """The trainer's own checks, at once: a bad value is refused before a job starts."""
        declared = declared_inputs(self.train_fn)
        parsed = {}
        for name, value in values.items():
            if name not in declared:
                raise InputError(f"unknown input {name!r}")
            parsed[name] = parse_cli_value(declared[name][0], str(value))
        check_inputs(self.train_fn, {"train_data": Path(__file__), **parsed})

    def compare(self, recording_id: str, models: list[str]) -> Job:
        if len(models) != 2:
            raise StudioError("compare takes two models")
        audio = self.store.audio_path(recording_id)
        steps = [
            ["predict", "--weights", self.model_spec(m), "-i", f"audio=@{audio}"]
            + ["-i", "output_formats="]
            for m in models
        ]

        def finish(job: Job, outputs: list[dict]) -> dict:
            texts = [o["text"] for o in outputs]
            return {"models": models, "texts": texts, "diff": word_diff(*texts)}

        title = f"Compare {models[0]} and {models[1]}"
        return self.jobs.submit("compare", title, steps, finish)


REPORTED = (
    "base_model",
    "language",
    "wer_before",
    "wer_after",
    "vocabulary",
    "best_epoch",
    "history",
    "training_seconds",
)


def cues_with_confidence(output: dict) -> list[dict]:
    """The prediction's words as readable cues (the Predictor's own cue builder), each word
    with the model's probability, so the page can mark the doubtful ones."""
    segments = [
        Segment(
            s["id"],
            s["start"],
            s["end"],
            s["text"],
            s["avg_logprob"],
            s["no_speech_prob"],
            [Word(**w) for w in s["words"]] if s.get("words") else None,
        )
        for s in output["segments"]
    ]
    transcript = Transcript(
        output["text"],
        output["language"],
        output["language_probability"],
        output["duration"],
        segments,
    )
    cues, _ = transcript_cues(transcript)
    spoken = iter([w for s in segments for w in s.words or [] if w.word.strip()])
    found = []
    for cue in cues:
        words = []
        for start, end, text in cue.words:
            heard = next(spoken, None)
            probability = heard.probability if heard and heard.word.strip() == text else 1.0
            words.append({"start": start, "end": end, "text": text, "p": round(probability, 3)})
        found.append({"start": cue.start, "end": cue.end, "text": cue.text, "words": words})
    return found


def word_diff(a: str, b: str) -> list[dict]:
    """[{"op": "equal"|"replace"|"delete"|"insert", "a": words, "b": words}]"""
    left, right = a.split(), b.split()
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    return [
        {"op": op, "a": " ".join(left[i1:i2]), "b": " ".join(right[j1:j2])}
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
    ]


# ---------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    studio: Studio
    token: str | None = None
    server_version = "whisper-ft-studio"

    def log_message(self, fmt, *args):  # requests at debug level, not on stderr
        logger.debug("%s " + fmt, self.address_string(), *args)

    # Each verb routes to a method; errors become JSON with a message that says what to fix.
    def do_GET(self):
        self._guarded(self._get)

    def do_POST(self):
        self._guarded(self._post)

    def do_PUT(self):
        self._guarded(self._put)

    def _guarded(self, action) -> None:
        try:
            if not self._authorised():
                return self._json({"error": "this studio needs its token"}, HTTPStatus.FORBIDDEN)
            action()
        except (StudioError, InputError, AudioError, ValueError) as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except Exception as e:  # the studio keeps serving
            logger.exception("request failed")
            self._json({"error": f"internal error: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _authorised(self) -> bool:
        if self.token is None:
            return True
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        cookie = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        given = (
            self.headers.get("X-Studio-Token")
            or (query.get("token") or [None])[0]
            or (cookie["studio_token"].value if "studio_token" in cookie else None)
        )
        return given is not None and secrets.compare_digest(given, self.token)

    def _get(self) -> None:
        path = urllib.parse.urlparse(self.path).path
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        route = self._route(path)
        studio = self.studio
        if route == ("state", None, None):
            return self._json(studio.state())
        kind, item, action = route
        if kind == "recordings" and item and action is None:
            return self._json({**studio.store.meta(item), **studio.store.cues(item)})
        if kind == "recordings" and item and action == "audio":
            return self._file(studio.store.audio_path(item), "audio/wav")
        if kind == "recordings" and item and action and action.startswith("export."):
            name, body = studio.export(item, action.removeprefix("export."))
            return self._bytes(body, "text/plain; charset=utf-8", attachment=name)
        if kind == "jobs" and item:
            return self._json(self._job(item).view())
        if kind == "models" and item and action == "weights.tar":
            return self._file(studio.store.model_path(item), "application/x-tar", "weights.tar")
        self._json({"error": f"no such page: {path}"}, HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        parsed = urllib.parse.urlparse(self.path)
        kind, item, action = self._route(parsed.path)
        studio = self.studio
        if (kind, item, action) == ("recordings", None, None):
            name = (urllib.parse.parse_qs(parsed.query).get("name") or ["recording"])[0]
            length = int(self.headers.get("Content-Length") or 0)
            return self._json(studio.upload(name, self.rfile, length))
        body = self._body()
        if (kind, item, action) == ("recordings", None, "url"):
            return self._json(studio.upload_url(str(body.get("url", ""))))
        if kind == "recordings" and item and action == "transcribe":
            job = studio.transcribe(
                item, body.get("model", "base"), body.get("language", "auto"), body.get("task")
            )
            return self._json(job.view())
        if kind == "recordings" and item and action == "training":
            include = bool(body.get("include"))
            return self._json(studio.store.update_meta(item, in_training_set=include))
        if (kind, item, action) == ("training", None, None):
            return self._json(studio.store.build_training_set())
        if (kind, item, action) == ("train", None, None):
            values = {k: v for k, v in (body.get("inputs") or {}).items() if v not in ("", None)}
            return self._json(studio.train(body.get("model", "base"), values).view())
        if (kind, item, action) == ("compare", None, None):
            job = studio.compare(str(body.get("recording", "")), list(body.get("models") or []))
            return self._json(job.view())
        if kind == "jobs" and item and action == "cancel":
            job = self._job(item)
            studio.jobs.cancel(job)
            return self._json(job.view())
        self._json({"error": f"no such action: {parsed.path}"}, HTTPStatus.NOT_FOUND)

    def _put(self) -> None:
        kind, item, action = self._route(urllib.parse.urlparse(self.path).path)
        if kind == "recordings" and item and action == "cues":
            cues = self._body().get("cues")
            if not isinstance(cues, list):
                raise StudioError("send the cues as a list")
            return self._json(self.studio.store.save_cues(item, cues))
        self._json({"error": f"no such action: {self.path}"}, HTTPStatus.NOT_FOUND)

    # ---------------------------------------------------------------- helpers

    def _route(self, path: str) -> tuple[str | None, str | None, str | None]:
        match = _ROUTE.match(path)
        if match is None:
            return None, None, None
        return match["kind"], match["id"], match["action"]

    def _job(self, job_id: str) -> Job:
        job = self.studio.jobs.get(job_id)
        if job is None:
            raise StudioError(f"no job {job_id!r} (jobs are forgotten when the studio restarts)")
        return job

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_JSON_BYTES:
            raise StudioError(f"request of {length} bytes is too large")
        if length == 0:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError as e:
            raise StudioError(f"the request is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise StudioError("the request must be a JSON object")
        return body

    def _static(self, name: str) -> None:
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            return self._json({"error": f"no such file: {name}"}, HTTPStatus.NOT_FOUND)
        kind = CONTENT_TYPES.get(files[name].suffix, "application/octet-stream")
        self._bytes(files[name].read_bytes(), f"{kind}; charset=utf-8", cache=False)

    def _json(self, value, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(value, default=str).encode("utf-8")
        self._bytes(body, "application/json", status=status)

    def _bytes(self, body: bytes, kind: str, status=HTTPStatus.OK, attachment=None, cache=True):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if attachment:
            self.send_header("Content-Disposition", f'attachment; filename="{attachment}"')
        if not cache:
            self.send_header("Cache-Control", "no-store")
        self._token_cookie()
        self.end_headers()
        self.wfile.write(body)

    def _file(self, path: Path, kind: str, attachment: str | None = None) -> None:
        """A file, with HTTP ranges, so that the page's audio player can seek."""
        size = path.stat().st_size
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        start, end = 0, size - 1
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), int(match[2] or size - 1)
            else:
                start = max(0, size - int(match[2]))
        end = min(end, size - 1)
        if match and start > end:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        self.send_response(HTTPStatus.PARTIAL_CONTENT if match else HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if attachment:
            self.send_header("Content-Disposition", f'attachment; filename="{attachment}"')
        self._token_cookie()
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                block = f.read(min(left, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)

    def _token_cookie(self) -> None:
        if self.token is not None:
            self.send_header(
                "Set-Cookie", f"studio_token={self.token}; HttpOnly; SameSite=Strict; Path=/"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str, port: int, data: Path, token: str | None, max_upload_mb: int) -> None:
    """Run the studio until interrupted. Any address but the loopback needs a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"--host {host} lets other machines in: give --token (or WHISPER_FT_STUDIO_TOKEN) "
            "and open the page as http://HOST:PORT/?token=..."
        )
    handler = type("StudioHandler", (Handler,), {"studio": Studio(data, max_upload_mb)})
    handler.token = token
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    url = f"http://{host}:{server.server_address[1]}/"
    logger.info("studio at %s (data in %s)", url + (f"?token={token}" if token else ""), data)
    print(f"whisper-ft studio: {url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
