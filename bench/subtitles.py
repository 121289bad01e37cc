"""Subtitles people can read: whisper-ft's cues against the peers', on real long recordings.

    .venv/bin/pip install --no-deps openai-whisper==20250625   # its subtitle writer only
    .venv/bin/python -m bench.subtitles                          # base, the embedded default
    .venv/bin/python -m bench.subtitles --model tiny.en --only raven_stanzas03-15

For every recording of ../shared/longform and the README's sample, side by side in one run:

- whisper-ft: the Predictor's path with its defaults (VTT as a user gets it, read back);
- faster-whisper segments: the same model in faster-whisper's own sequential loop, each
  segment a cue;
- openai-whisper's writer: those faster-whisper segments and words through openai-whisper's
  WriteVTT with max_line_width=42, max_line_count=2 (what its users get with those options).

Each cue is checked against Netflix's English rules (whisper_ft.subtitles.rule_breaks: <= 42
characters a line, <= 2 lines, 5/6 s to 7 s on screen, <= 20 characters a second, no
overlap). Also: cue count, median duration, WER against the reference text, and the error of
word start times against the reference timings (the Raven's words; the first word of each
phrase of the Bible chapters).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from bench.shared_speech import SHARED
from whisper_ft.outputs import run_task
from whisper_ft.subtitles import Cue, parse_vtt, rule_breaks
from whisper_ft.transcribe import Transcriber, TranscribeSettings
from whisper_ft.weights import ct2_model
from whisper_ft.wer import normalizer, word_error_rate

LONGFORM = SHARED / "longform"
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.flac"
RESULTS = Path(__file__).resolve().parent / "results"
RULES = ("too_fast", "too_short", "too_long", "width", "lines", "overlap")
SYSTEMS = ("whisper-ft", "faster-whisper segments", "openai-whisper writer 42x2")


# ---------------------------------------------------------------- reference timings


def reference_timing(name: str) -> tuple[list[str], dict[int, float]]:
    """The reference's words in order, and the start of those that are timed (by index):
    every word of the Raven; the first word of every phrase of a Bible chapter. Nothing
    when the recording has no timings."""
    timing = LONGFORM / "timing"
    words = timing / f"{name}.words.vtt"
    if words.is_file():
        cues = parse_vtt(words.read_text(encoding="utf-8"))
        return [c.text for c in cues], {k: c.start for k, c in enumerate(cues)}
    sab = timing / f"{name}.sab-timing.txt"
    if not sab.is_file():
        return [], {}
    phrases = usfm_phrases(LONGFORM / "refs" / f"{name}.source.usfm")
    said: list[str] = []
    starts: dict[int, float] = {}
    for line in sab.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and phrases.get(parts[2]):
            starts[len(said)] = float(parts[0])
            said += phrases[parts[2]].split()
    return said, starts


def usfm_phrases(path: Path) -> dict[str, str]:
    """ "1a" -> text of the first phrase of verse 1, phrases split at .?!:;, (as the timing
    files' header says), footnotes and cross-references left out."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\\(f|x) .*?\\\1\*", " ", text, flags=re.S)
    verses: dict[str, str] = {}
    for number, body in re.findall(r"\\v (\d+) (.*?)(?=\\v \d+ |\\c \d+|\Z)", text, flags=re.S):
        body = re.sub(r"\\[a-z0-9]+\*?", " ", body)
        verses[number] = " ".join(body.split())
    phrases = {}
    for number, body in verses.items():
        pieces = [p.strip() for p in re.findall(r"[^.?!:;,]+[.?!:;,]*", body) if p.strip()]
        for k, piece in enumerate(pieces):
            phrases[f"{number}{chr(ord('a') + k)}"] = piece
    return phrases


def start_errors(words: list[tuple[float, str]], timing: tuple[list[str], dict]) -> list[float]:
    """|heard start - reference start| in ms for each timed reference word that was heard:
    the two word sequences aligned after Whisper's normalisation."""
    said, starts = timing
    norm = normalizer("en")
    matcher = difflib.SequenceMatcher(
        None, [norm(w) for w in said], [norm(w) for _, w in words], autojunk=False
    )
    errors = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            if block.a + k in starts:
                errors.append(abs(words[block.b + k][0] - starts[block.a + k]) * 1000)
    return errors


# ---------------------------------------------------------------- the three systems


def whisper_ft(model: Transcriber, audio: Path, folder: Path):
    settings = TranscribeSettings(language="en", word_timestamps=True)
    result = run_task(model, audio, "transcribe", settings, ["vtt"], folder)
    cues = parse_vtt(result.files["vtt"].read_text(encoding="utf-8"))
    words = [(w.start, w.word) for s in result.transcript.segments for w in s.words or []]
    return cues, words, result.transcript.text


def faster_whisper(model: Transcriber, audio: Path):
    """faster-whisper's own loop: its segments (as cues) and words."""
    segments, _ = model.model.transcribe(
        str(audio), language="en", beam_size=5, word_timestamps=True
    )
    segments = list(segments)
    cues = [Cue(s.start, s.end, s.text.strip()) for s in segments if s.text.strip()]
    words = [(w.start, w.word) for s in segments for w in s.words or []]
    return segments, cues, words, " ".join(c.text for c in cues)


def openai_whisper_writer(segments, folder: Path) -> list[Cue] | None:
    """The segments through openai-whisper's WriteVTT (42 x 2); None when it is absent."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "utils.py"
    loader = importlib.util.spec_from_file_location("openai_whisper_utils", path)
    utils = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(utils)  # its writers need only the standard library
    result = {
        "language": "en",
        "segments": [
            {
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "words": [{"start": w.start, "end": w.end, "word": w.word} for w in s.words],
            }
            for s in segments
        ],
    }
    options = {"max_line_width": 42, "max_line_count": 2, "highlight_words": False}
    utils.WriteVTT(str(folder))(result, str(folder / "openai.flac"), options)
    return parse_vtt((folder / "openai.vtt").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- scoring


def row(cues: list[Cue], text: str, reference: str | None, errors: list[float] | None) -> dict:
    broken = rule_breaks(cues)
    share = lambda rule: 100.0 * sum(rule in b for b in broken) / max(len(cues), 1)  # noqa: E731
    out = {
        "cues": len(cues),
        "breaking_any": 100.0 * sum(bool(b) for b in broken) / max(len(cues), 1),
        **{rule: share(rule) for rule in RULES},
        "median_s": statistics.median(c.end - c.start for c in cues) if cues else 0.0,
        "wer": word_error_rate([reference], [text], "en") if reference else None,
    }
    if errors:
        ordered = sorted(errors)
        out["start_ms_median"] = statistics.median(ordered)
        out["start_ms_p90"] = ordered[int(0.9 * (len(ordered) - 1))]
        out["timed_words"] = len(ordered)
    return out


def recordings(only: str | None) -> list[tuple[str, Path, str | None]]:
    found = [("README sample", SAMPLE, None)]
    for audio in sorted((LONGFORM / "audio").glob("*.flac")):
        reference = (LONGFORM / "refs" / f"{audio.stem}.txt").read_text(encoding="utf-8")
        found.append((audio.stem, audio, reference))
    return [r for r in found if only is None or r[0] == only]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    parser.add_argument("--only", help="one recording's name")
    args = parser.parse_args()
    if not (LONGFORM / "audio").is_dir():
        parser.error(f"{LONGFORM} is absent: this benchmark reads its real recordings")
    model = Transcriber(ct2_model(args.model))
    folder = Path(tempfile.mkdtemp(prefix="bench-subtitles-"))
    results: dict[str, dict[str, dict]] = {}
    for name, audio, reference in recordings(args.only):
        timed = reference_timing(name) if reference else ([], {})
        began = time.monotonic()
        cues, words, text = whisper_ft(model, audio, folder)
        ours_s = time.monotonic() - began
        segments, fw_cues, fw_words, fw_text = faster_whisper(model, audio)
        theirs = openai_whisper_writer(segments, folder)
        results[name] = {
            SYSTEMS[0]: row(
                cues, text, reference, start_errors(words, timed) if timed[1] else None
            ),
            SYSTEMS[1]: row(
                fw_cues, fw_text, reference, start_errors(fw_words, timed) if timed[1] else None
            ),
        }
        if theirs is not None:
            results[name][SYSTEMS[2]] = row(theirs, fw_text, reference, None)
        results[name][SYSTEMS[0]]["seconds"] = ours_s
        print(name, json.dumps(results[name]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"subtitles-{args.model}.json"
    out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"written: {out}")


def print_table(results: dict[str, dict[str, dict]]) -> None:
    print(
        "\n| recording | system | cues | breaking any rule | too fast | too short | too long "
        "| over 42 | over 2 lines | overlap | median s | WER | start error median / p90 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[int]] = {}
    for name, systems in results.items():
        for system, r in systems.items():
            wer = f"{r['wer']:.2f}%" if r["wer"] is not None else "-"
            timing = (
                f"{r['start_ms_median']:.0f} / {r['start_ms_p90']:.0f}"
                if "start_ms_median" in r
                else "-"
            )
            shares = " | ".join(f"{r[rule]:.0f}%" for rule in RULES)
            print(
                f"| {name} | {system} | {r['cues']} | {r['breaking_any']:.1f}% | {shares} "
                f"| {r['median_s']:.2f} | {wer} | {timing} |"
            )
            if name != "README sample":
                count = totals.setdefault(system, [0, 0])
                count[0] += r["cues"]
                count[1] += round(r["breaking_any"] * r["cues"] / 100)
    for system, (cues, broken) in totals.items():
        print(f"| all of longform | {system} | {cues} | {100.0 * broken / max(cues, 1):.1f}% |")


if __name__ == "__main__":
    main()
