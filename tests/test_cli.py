from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whisper_ft", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_predict_transcribes_and_writes_files(speech_wav, tmp_path):
    result = cli(
        "predict",
        "-i",
        f"audio=@{speech_wav}",
        "-i",
        "output_formats=srt,vtt",
        "--weights",
        "tiny.en",
        "-o",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert "quick brown fox" in output["text"].lower()
    assert output["language"] == "en"
    assert Path(output["srt"]).read_text().startswith("1\n00:00:0")
    assert Path(output["vtt"]).read_text().startswith("WEBVTT")
    assert output["txt"] is None


def test_bad_input_names_the_input_and_choices(speech_wav, tmp_path):
    result = cli("predict", "-i", f"audio=@{speech_wav}", "-i", "task=sing", cwd=tmp_path)
    assert result.returncode == 2
    assert "task: 'sing' is not allowed; choose one of: transcribe, translate" in result.stderr


def test_unknown_input_lists_the_inputs(tmp_path):
    result = cli("predict", "-i", "colour=blue", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown input 'colour'" in result.stderr and "audio" in result.stderr


def test_missing_file(tmp_path):
    result = cli("predict", "-i", "audio=@nowhere.mp3", cwd=tmp_path)
    assert result.returncode == 2
    assert "no such file: nowhere.mp3" in result.stderr
