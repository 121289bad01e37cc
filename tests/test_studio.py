"""The studio, driven the way a user drives it: a real headless Chromium on the page of a
studio started from the command line, through the whole loop on tiny.en.

Set WHISPER_FT_SCREENSHOT=docs/studio.png to write the README's screenshot from this run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.speech import espeak, silence
from whisper_ft.audio import load_audio, write_audio
from whisper_ft.subtitles import parse_vtt

ROOT = Path(__file__).resolve().parents[1]
NAME = "Zentrafy"  # an invented name: tiny.en cannot spell it before it is taught
RECORDINGS = {
    "first.wav": (
        f"{NAME} makes the fastest coffee machines in town.",
        f"Yesterday I bought a new {NAME} for the office.",
    ),
    "second.wav": (
        f"The {NAME} team answered my letter within a day.",
        f"Everyone in the kitchen loves the {NAME} now.",
    ),
}
HELD_OUT = f"My sister wants a {NAME} for her birthday."

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="chromium and chromedriver are not installed (scripts/test.sh installs them)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("studio-clips")
    found = {}
    for name, sentences in {**RECORDINGS, "held_out.wav": (HELD_OUT,)}.items():
        parts = []
        for k, sentence in enumerate(sentences):
            parts += [load_audio(espeak(sentence, folder / f"{name}-{k}.wav")), silence(1.0)]
        found[name] = folder / name
        write_audio(found[name], np.concatenate([silence(0.5), *parts]))
    (folder / "notes.txt").write_text("this is not audio\n" * 50)
    (folder / "empty.wav").write_bytes(b"")
    found["notes.txt"], found["empty.wav"] = folder / "notes.txt", folder / "empty.wav"
    return found


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """`python -m whisper_ft studio` as a user starts it; yields its URL."""
    data = tmp_path_factory.mktemp("studio-data")
    port = free_port()
    log = open(data / "studio.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "whisper_ft", "studio", "--port", str(port), "--data", str(data)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "api/state", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1500,1000",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


class Page:
    """The studio's page, in the words of what a user does on it."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.url, self.by = driver, url, By
        from selenium.common.exceptions import StaleElementReferenceException

        self.wait = lambda seconds=60: WebDriverWait(
            driver, seconds, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        )

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def all(self, css: str):
        return self.driver.find_elements(self.by.CSS_SELECTOR, css)

    def open(self) -> None:
        self.driver.get(self.url)
        self.wait().until(lambda d: self.all("#model option"))

    def upload(self, *paths: Path) -> None:
        self.find("#upload").send_keys("\n".join(str(p) for p in paths))

    def error(self) -> str:
        """The error the page shows; closed after reading."""
        self.wait(30).until(lambda d: self.find("#error").is_displayed())
        text = self.find("#error-text").text
        self.find("#error-close").click()
        self.wait(5).until(lambda d: not self.find("#error").is_displayed())
        return text

    def select_recording(self, name: str) -> None:
        self.wait().until(lambda d: self._recording(name) is not None)
        self._recording(name).click()
        self.wait().until(lambda d: name in self.find("#recording-name").text)

    def _recording(self, name: str):
        for item in self.all("#recordings li"):
            if item.text.startswith(name):
                return item
        return None

    def choose(self, css: str, label_start: str) -> None:
        """Pick the option whose label starts so, once the page lists it."""
        from selenium.webdriver.support.ui import Select

        def pick(driver) -> bool:
            select = Select(self.find(css))
            for option in select.options:
                if option.text.startswith(label_start):
                    select.select_by_visible_text(option.text)
                    return True
            return False

        self.wait().until(pick)

    def start_job(self, button: str) -> None:
        """Click a button that starts a job, and wait for the header to show that job."""
        before = self.find("#job-title").text
        self.find(button).click()
        self.wait().until(lambda d: self.find("#job-title").text not in ("", before))

    def job_ends(self, seconds: float = 300) -> str:
        """Wait for the header's job to end; its state."""
        self.wait(seconds).until(
            lambda d: re.search(r": (done|failed|canceled)$", self.find("#job-title").text)
        )
        return self.find("#job-title").text.rsplit(": ", 1)[1]

    def cue_texts(self) -> list[str]:
        return [e.text for e in self.all("#cues .text")]

    def saved_version(self) -> int:
        match = re.search(r"version (\d+)", self.find("#saved").text)
        return int(match[1]) if match else 0


def api(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path.lstrip("/"), timeout=30) as response:
        return json.loads(response.read())


def test_the_whole_loop_in_the_browser(studio, browser, clips, tmp_path):
    from selenium.webdriver.common.keys import Keys

    page = Page(browser, studio)
    page.open()

    # Bad input first: the page says what is wrong, and the studio goes on.
    page.upload(clips["notes.txt"])
    assert "notes.txt: not a readable audio or video file" in page.error()
    page.upload(clips["empty.wav"])
    assert "empty" in page.error()

    # 1. Transcribe two recordings and a held-out clip with tiny.en.
    page.upload(clips["first.wav"], clips["second.wav"], clips["held_out.wav"])
    page.choose("#model", "tiny.en")
    for name in ("first.wav", "second.wav"):
        page.select_recording(name)
        page.start_job("#transcribe")
        assert page.job_ends() == "done"
        page.wait().until(lambda d: page.cue_texts())
        heard = " ".join(page.cue_texts())
        assert NAME not in heard, heard  # the model cannot spell the name yet

    # 2. Correct: both recordings' cues merged into one each and the text typed right; a nudge
    # of the start time; then a reload finds every edit kept.
    for name, sentences in RECORDINGS.items():
        page.select_recording(name)
        before = page.saved_version()
        while len(page.all("#cues li")) > 1:
            count = len(page.all("#cues li"))
            page.all("#cues li")[0].find_element(
                page.by.XPATH, ".//button[text()='Merge ↓']"
            ).click()
            page.wait().until(lambda d, count=count: len(page.all("#cues li")) == count - 1)
        text = page.find("#cues .text")
        text.click()
        text.send_keys(Keys.CONTROL, "a")
        text.send_keys(" ".join(sentences))
        page.wait().until(lambda d, before=before: page.saved_version() > before + 1)
        start = float(page.find("#cues input.start").get_attribute("value"))
        page.find("#cues .times button").click()  # the start's "−": 0.1 s earlier
        page.wait().until(
            lambda d, start=start: (
                page.find("#cues input.start").get_attribute("value")
                == f"{max(0.0, start - 0.1):.2f}"
            )
        )
    page.driver.refresh()
    page.open()
    for name, sentences in RECORDINGS.items():
        page.select_recording(name)
        page.wait().until(lambda d: page.cue_texts())
        assert page.cue_texts() == [" ".join(sentences)]

    # Undo takes the last edit back (and saves that too).
    start = page.find("#cues input.start").get_attribute("value")
    page.all("#cues .times button")[1].click()  # the start's "+": 0.1 s later
    page.wait().until(lambda d: page.find("#cues input.start").get_attribute("value") != start)
    page.find("#undo").click()
    page.wait().until(lambda d: page.find("#cues input.start").get_attribute("value") == start)

    # 3. Export: the VTT a user downloads parses back to the corrected text.
    recording = next(
        r for r in api(studio, "/api/state")["recordings"] if r["name"] == "second.wav"
    )
    vtt = urllib.request.urlopen(page.find("#export-vtt").get_attribute("href")).read().decode()
    assert [" ".join(c.text.split()) for c in parse_vtt(vtt)] == [
        " ".join(RECORDINGS["second.wav"])
    ]
    assert recording["status"] == "corrected"

    # The training set: both corrected recordings, in the layout `train` reads.
    for name in RECORDINGS:
        page.select_recording(name)
        page.find("#in-training").click()
        page.wait().until(lambda d, name=name: "in set" in page._recording(name).text)
    assert "2 recording(s)" in page.find("#training-set").text

    # 4. Train a few steps, with progress shown; then use the tuned model.
    page.choose("#train-model", "tiny.en")
    page.find("details summary").click()
    for field, value in (("max_steps", "6"), ("batch_size", "4"), ("learning_rate", "0.001")):
        box = page.find(f"#train-form [name={field}]")
        box.clear()
        box.send_keys(value)
    page.start_job("#train")
    page.wait(300).until(lambda d: "Step" in page.find("#train-step").text)
    assert re.search(r"Step \d+ of 6", page.find("#train-step").text)
    assert page.job_ends(600) == "done"
    result = page.find("#train-result").text
    assert "validation WER" in result and "Words it was taught" in result
    assert page.all("#epochs tr")  # the epochs' losses and WER
    page.find("#use-model").click()

    # A second training, canceled: the page says so and the studio stays usable.
    page.start_job("#train")
    page.wait(120).until(lambda d: "running" in page.find("#job-title").text)
    page.find("#job-cancel").click()
    assert page.job_ends(120) == "canceled"

    # 5. Compare the base and the tuned model on the held-out clip.
    page.choose("#compare-recording", "held_out.wav")
    page.choose("#compare-a", "tiny.en")
    page.choose("#compare-b", "tuned")
    page.start_job("#compare")
    assert page.job_ends() == "done"
    page.wait().until(lambda d: len(page.all("#compare-result .text")) == 2)
    texts = [e.text for e in page.all("#compare-result .text")]
    assert all("birthday" in t.lower() for t in texts), texts

    # The new model, switched on with "Use this model", transcribes the held-out clip.
    page.select_recording("held_out.wav")
    assert page.find("#model").get_attribute("value").startswith("model:")
    page.start_job("#transcribe")
    assert page.job_ends() == "done"
    page.wait().until(lambda d: "birthday" in " ".join(page.cue_texts()).lower())

    screenshot = os.environ.get("WHISPER_FT_SCREENSHOT")
    page.find("details summary").click()  # the training settings folded again
    page.driver.execute_script("window.scrollTo(0, 0)")
    page.driver.save_screenshot(str(tmp_path / "studio.png"))
    if screenshot:
        shutil.copy(tmp_path / "studio.png", ROOT / screenshot)


def test_the_api_refuses_what_it_cannot_do(studio):
    def post(path: str, body: bytes, kind="application/json") -> tuple[int, dict]:
        request = urllib.request.Request(
            studio + path.lstrip("/"), data=body, headers={"Content-Type": kind}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = post("/api/recordings/0123456789ab/transcribe", b"{}")
    assert status == 400 and "no recording" in body["error"]
    status, body = post("/api/train", json.dumps({"inputs": {"learning_rate": "5"}}).encode())
    assert status == 400 and "learning_rate: 5.0 is above the maximum" in body["error"]
    status, body = post("/api/recordings/url", json.dumps({"url": "file:///etc/passwd"}).encode())
    assert status == 400 and "not an http(s) URL" in body["error"]
    status, body = post("/api/compare", b"not json")
    assert status == 400 and "not JSON" in body["error"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(studio + "static/..%2f..%2fserver.py")
    assert e.value.code == 404
    assert api(studio, "/api/state")["recordings"] is not None  # still serving


def test_another_address_needs_a_token(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "whisper_ft",
            "studio",
            "--host",
            "0.0.0.0",
            "--data",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "WHISPER_FT_STUDIO_TOKEN"},
    )
    assert run.returncode == 2
    assert "--host 0.0.0.0 lets other machines in: give --token" in run.stderr


def test_a_token_guards_every_request(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "whisper_ft", "studio", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--data", tmp_path, "--token", "s3cret"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/state"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=2)
            except urllib.error.HTTPError as e:
                assert e.code == 403  # no token: refused
                break
            except OSError:
                time.sleep(0.2)
        with urllib.request.urlopen(url + "?token=s3cret", timeout=10) as response:
            assert response.status == 200
            cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        request = urllib.request.Request(url, headers={"Cookie": cookie.split(";")[0]})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["recordings"] == []
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "?token=wrong", timeout=10)
        assert refused.value.code == 403
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_restarted_studio_keeps_every_edit(tmp_path, clips):
    """Edits are on disk as soon as they are made: a new studio on the same folder has them."""
    from whisper_ft.studio.server import Studio
    from whisper_ft.studio.store import StudioError

    first = Studio(tmp_path)
    upload = tmp_path / "upload.wav"
    shutil.copy(clips["first.wav"], upload)
    meta = first.store.add_recording("first.wav", upload)
    cues = [{"start": 0.5, "end": 3.0, "text": RECORDINGS["first.wav"][0]}]
    first.store.save_cues(meta["id"], cues)
    first.store.update_meta(meta["id"], status="transcribing")  # as if cut off mid-job

    again = Studio(tmp_path)
    assert [m["name"] for m in again.store.recordings()] == ["first.wav"]
    assert again.store.cues(meta["id"])["cues"][0]["text"] == RECORDINGS["first.wav"][0]
    assert again.store.meta(meta["id"])["status"] == "transcribed"
    name, vtt = again.export(meta["id"], "vtt")
    assert name == "first.vtt" and RECORDINGS["first.wav"][0] in vtt.decode()

    # One short recording is not enough to train and validate: the studio says what to do.
    again.store.update_meta(meta["id"], in_training_set=True)
    with pytest.raises(StudioError, match="add another corrected recording"):
        again.train("tiny.en", {})
