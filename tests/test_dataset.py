from __future__ import annotations

import itertools
import math
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.speech import encode, espeak, silence
from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
from whisper_ft.dataset import (
    DatasetError,
    DatasetLimits,
    Example,
    find_pairs,
    load_dataset,
    read_transcript,
    safe_extract,
    sentences,
    windows,
)
from whisper_ft.outputs import DatasetWriter
from whisper_ft.subtitles import Cue, write_srt, write_vtt
from whisper_ft.transcribe import Segment

SENTENCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and a snack for Bob.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday.",
]
SHORT = "Hello world, this is a short test."
PAUSE = 4.0  # seconds of silence before, between and after the sentences of the long recording


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, np.ndarray]:
    """Each sentence spoken once (espeak-ng), as 16 kHz float32 arrays."""
    folder = tmp_path_factory.mktemp("sentences")
    texts = [*SENTENCES, SHORT]
    return {t: load_audio(espeak(t, folder / f"s{i}.wav")) for i, t in enumerate(texts)}


@pytest.fixture(scope="module")
def long_recording(speech) -> tuple[np.ndarray, list[Cue]]:
    """The four sentences with pauses between them (over 30 s) and their exact cues."""
    parts, cues, t = [silence(PAUSE)], [], PAUSE
    for text in SENTENCES:
        audio = speech[text]
        cues.append(Cue(round(t, 3), round(t + audio.size / SAMPLE_RATE, 3), text))
        parts += [audio, silence(PAUSE)]
        t += audio.size / SAMPLE_RATE + PAUSE
    audio = np.concatenate(parts)
    assert audio.size / SAMPLE_RATE > 30
    return audio, cues


def audio_bytes(audio: np.ndarray, tmp_path: Path, suffix: str = ".wav") -> bytes:
    path = tmp_path / f"encoded{suffix}"
    write_audio(path, audio) if suffix == ".wav" else encode(audio, path)
    data = path.read_bytes()
    path.unlink()
    return data


def make_zip(path: Path, files: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def good_files(speech, long_recording, tmp_path) -> dict[str, bytes | str]:
    """Three recordings in sub-folders: a long WAV + VTT, an MP3 + SRT, a FLAC clip + TXT."""
    audio, cues = long_recording
    short = speech[SHORT]
    short_cues = [Cue(0.0, short.size / SAMPLE_RATE, SHORT)]
    return {
        "talks/long.wav": audio_bytes(audio, tmp_path),
        "talks/long.vtt": write_vtt(cues),
        "b/short.mp3": audio_bytes(short, tmp_path, ".mp3"),
        "b/short.srt": write_srt(short_cues),
        "c/clip.flac": audio_bytes(speech[SENTENCES[2]], tmp_path, ".flac"),
        "c/clip.txt": SENTENCES[2] + "\n",
        "__MACOSX/talks/._long.wav": b"\x00\x05\x16\x07 apple double",
        "talks/.DS_Store": b"\x00\x00\x00\x01Bud1",
    }


def check_example(ex) -> None:
    seconds = ex.audio.size / SAMPLE_RATE
    assert ex.audio.dtype == np.float32 and ex.audio.ndim == 1
    assert 0 < seconds <= 30.0
    for cue in ex.cues:
        assert 0.0 <= cue.start <= cue.end <= seconds
        assert cue.start == round(cue.start, 2) and cue.end == round(cue.end, 2)
    if ex.cues:
        assert ex.text == " ".join(c.text for c in ex.cues)


# --- good data -----------------------------------------------------------------------------


def test_good_dataset(good_files, long_recording, tmp_path):
    data = make_zip(tmp_path / "data.zip", good_files)
    ds = load_dataset(data, tmp_path / "work")
    examples = ds.train + ds.validation
    assert ds.recordings == 3
    assert ds.warnings == []
    assert {ex.recording for ex in examples} == {"talks/long.wav", "b/short.mp3", "c/clip.flac"}
    assert ds.seconds == pytest.approx(sum(ex.audio.size for ex in examples) / SAMPLE_RATE)
    for ex in examples:
        check_example(ex)

    # The long recording: several windows that together hold every cue once, whole.
    audio, cues = long_recording
    long = sorted(
        (ex for ex in examples if ex.recording == "talks/long.wav"), key=lambda e: e.start
    )
    assert len(long) >= 2
    assert [c.text for ex in long for c in ex.cues] == [c.text for c in cues]
    absolute = [ex.start + t for ex in long for c in ex.cues for t in (c.start, c.end)]
    assert absolute == pytest.approx([t for c in cues for t in (c.start, c.end)], abs=0.011)
    for ex in long:  # the window is the recording's own audio at its offset (WAV is lossless)
        lo = round(ex.start * SAMPLE_RATE)
        np.testing.assert_allclose(ex.audio, audio[lo : lo + ex.audio.size], atol=1e-4)
        # up to 0.2 s of audio kept around the cues
        assert ex.cues[0].start == pytest.approx(0.2, abs=0.011)
        assert ex.audio.size / SAMPLE_RATE - ex.cues[-1].end == pytest.approx(0.2, abs=0.011)

    clip = next(ex for ex in examples if ex.recording == "c/clip.flac")
    assert clip.cues == () and clip.text == SENTENCES[2] and clip.start == 0.0
    short = next(ex for ex in examples if ex.recording == "b/short.mp3")
    assert short.text == SHORT

    # The split is by recording, deterministic, and the extracted files are cleaned up: only
    # the decoded samples the windows read from stay.
    train_names = {ex.recording for ex in ds.train}
    validation_names = {ex.recording for ex in ds.validation}
    assert len(validation_names) == 1 and not train_names & validation_names
    again = load_dataset(data, tmp_path / "work")
    assert [(e.recording, e.start) for e in again.validation] == [
        (e.recording, e.start) for e in ds.validation
    ]
    left = list((tmp_path / "work").iterdir())
    assert len(left) == 2 and all(p.name.startswith("decoded-") for p in left), left


def test_split_is_seeded_by_recording_name_not_file_order(speech, tmp_path):
    wav = audio_bytes(speech[SHORT], tmp_path)
    vtt = write_vtt([Cue(0.0, 2.5, SHORT)])
    names = [f"rec{i}" for i in range(6)]
    forward = {f"{n}.{s}": d for n in names for s, d in (("wav", wav), ("vtt", vtt))}
    backward = dict(reversed(forward.items()))

    def split(files, seed):
        ds = load_dataset(
            make_zip(tmp_path / "d.zip", files), tmp_path / "w", validation_fraction=0.34, seed=seed
        )
        assert {e.recording for e in ds.train}.isdisjoint(e.recording for e in ds.validation)
        return sorted(e.recording for e in ds.validation)

    first = split(forward, seed=0)
    assert len(first) == 2  # 0.34 of 6 recordings
    assert split(backward, seed=0) == first
    assert any(split(forward, seed=s) != first for s in range(1, 6))
    ds = load_dataset(make_zip(tmp_path / "d.zip", forward), tmp_path / "w", validation_fraction=0)
    assert ds.validation == [] and len(ds.train) == 6


def test_dataset_export_layout_is_accepted(long_recording, tmp_path):
    """The zip that prediction's task=dataset writes trains as it is."""
    audio, cues = long_recording
    segments = [Segment(i, c.start, c.end, c.text, -0.1, 0.01) for i, c in enumerate(cues)]
    with DatasetWriter(tmp_path / "talk-dataset.zip", "talk") as writer:
        writer.add_piece(0.0, audio, segments)
    with zipfile.ZipFile(tmp_path / "talk-dataset.zip") as zf:
        assert "talk_0001.wav" in zf.namelist() and "talk_0001.vtt" in zf.namelist()
    ds = load_dataset(tmp_path / "talk-dataset.zip", tmp_path / "work", validation_fraction=0)
    assert ds.recordings == writer.count >= 2
    assert [c.text for ex in sorted(ds.train, key=lambda e: e.recording) for c in ex.cues] == [
        c.text for c in cues
    ]
    for ex in ds.train:
        check_example(ex)


def test_dataset_export_ends_a_cue_where_an_overlapping_segment_begins(long_recording, tmp_path):
    """Whisper's segments can overlap by tenths of a second (0.4 s on a real dramatized
    reading); the export's cues must not, or training refuses its own zip."""
    audio, cues = long_recording
    ends = [nxt.start + 0.4 for nxt in cues[1:]] + [cues[-1].end]  # each runs into the next
    segments = [
        Segment(i, c.start, end, c.text, -0.1, 0.01)
        for i, (c, end) in enumerate(zip(cues, ends, strict=True))
    ]
    assert any(b.start < a.end - 0.1 for a, b in itertools.pairwise(segments))
    with DatasetWriter(tmp_path / "talk-dataset.zip", "talk") as writer:
        writer.add_piece(0.0, audio, segments)
    ds = load_dataset(tmp_path / "talk-dataset.zip", tmp_path / "work", validation_fraction=0)
    assert [c.text for ex in sorted(ds.train, key=lambda e: e.recording) for c in ex.cues] == [
        c.text for c in cues
    ]
    for ex in ds.train:
        check_example(ex)
        assert all(a.end <= b.start for a, b in itertools.pairwise(ex.cues))


def test_validation_zip_is_used_whole(good_files, speech, tmp_path):
    train = make_zip(tmp_path / "train.zip", good_files)
    held_out = make_zip(
        tmp_path / "val.zip",
        {
            "held.wav": audio_bytes(speech[SHORT], tmp_path),
            "held.vtt": write_vtt([Cue(0.0, 2.5, SHORT)]),
        },
    )
    ds = load_dataset(train, tmp_path / "work", validation_zip=held_out, validation_fraction=0.5)
    assert {e.recording for e in ds.train} == {"talks/long.wav", "b/short.mp3", "c/clip.flac"}
    assert [e.recording for e in ds.validation] == ["held.wav"]
    assert ds.recordings == 4


def test_one_recording_splits_its_windows_with_a_warning(long_recording, tmp_path):
    audio, cues = long_recording
    files = {"only.wav": audio_bytes(audio, tmp_path), "only.vtt": write_vtt(cues)}
    ds = load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "work")
    assert len(ds.validation) == 1 and len(ds.train) >= 1
    assert ds.validation[0].start > ds.train[-1].start  # the last window
    assert any("only one recording" in w for w in ds.warnings)


def test_small_overlaps_are_clamped(speech, tmp_path):
    short = speech[SHORT]
    half = round(short.size / SAMPLE_RATE / 2, 2)
    cues = [Cue(0.0, half + 0.05, "Hello world,"), Cue(half, 2 * half, "this is a short test.")]
    files = {"a.wav": audio_bytes(short, tmp_path), "a.vtt": write_vtt(cues)}
    ds = load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "w", validation_fraction=0)
    (ex,) = ds.train
    assert ex.cues[0].end <= ex.cues[1].start
    assert ex.text == SHORT


def test_windows_pack_whole_cues():
    """10 cues of 8 s, 1 s apart: three fit in 30 s (26 s), four do not (35 s)."""
    cues = [Cue(9.0 * k, 9.0 * k + 8, f"cue {k}") for k in range(10)]
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, 1425600).astype(np.float32)  # 89.1 s
    result = windows(audio, cues, "synthetic.wav")
    assert [[c.text for c in ex.cues] for ex in result] == [
        [f"cue {k}" for k in range(i, min(i + 3, 10))] for i in range(0, 10, 3)
    ]
    for ex in result:
        check_example(ex)
        assert ex.recording == "synthetic.wav"
        lo = round(ex.start * SAMPLE_RATE)
        np.testing.assert_array_equal(ex.audio, audio[lo : lo + ex.audio.size])
    # the first window starts at 0 (no audio before it), the others 0.2 s before their cue
    assert [ex.start for ex in result] == pytest.approx([0.0, 26.8, 53.8, 80.8])
    assert result[1].cues == (
        Cue(0.2, 8.2, "cue 3"),
        Cue(9.2, 17.2, "cue 4"),
        Cue(18.2, 26.2, "cue 5"),
    )
    assert result[1].audio.size == round(26.4 * SAMPLE_RATE)  # 0.2 s after the last cue too
    assert result[-1].audio.size == round(8.3 * SAMPLE_RATE)  # the audio ends at 89.1 s
    assert windows(audio, [], "empty.wav") == []


def test_windows_keep_a_30_s_cue_and_clamp_padding():
    audio = np.ones(40 * SAMPLE_RATE, dtype=np.float32)
    (ex,) = windows(audio, [Cue(5.0, 35.0, "thirty seconds")], "x.wav")
    assert ex.audio.size == 30 * SAMPLE_RATE and ex.start == 5.0
    assert ex.cues == (Cue(0.0, 30.0, "thirty seconds"),)


def test_sentences_cut_each_cue_with_padding_short_of_its_neighbours():
    """Each cue of a window becomes an example of its own, with 0.2 s of audio either side
    where there is room, never into the neighbouring cue; times relative to the clip."""
    audio = np.random.default_rng(1).uniform(-0.1, 0.1, 20 * SAMPLE_RATE).astype(np.float32)
    cues = (Cue(0.1, 4.0, "first"), Cue(4.1, 9.0, "second"), Cue(12.0, 19.9, "third"))
    window = Example(audio, "first second third", cues, "talk.wav", 30.0)
    first, second, third = sentences(window)
    assert [e.text for e in (first, second, third)] == ["first", "second", "third"]
    assert (first.start, second.start, third.start) == pytest.approx((30.0, 34.0, 41.8))
    assert first.cues == (Cue(0.1, 4.0, "first"),)  # the window starts 0.1 s before it
    assert second.cues == (Cue(0.1, 5.0, "second"),)  # only 0.1 s after "first" ends
    assert third.cues == (Cue(0.2, 8.1, "third"),)  # 0.1 s left at the end of the window
    assert third.audio.size == round(8.2 * SAMPLE_RATE)
    np.testing.assert_array_equal(
        second.audio, audio[round(4.0 * SAMPLE_RATE) : round(9.2 * SAMPLE_RATE)]
    )
    clip = Example(audio, "no times", (), "clip.wav", 0.0)  # a .txt clip stays whole
    assert sentences(clip) == [clip]


def test_read_transcript_accepts_bom_and_txt(tmp_path):
    vtt = tmp_path / "a.vtt"
    vtt.write_bytes(
        b"\xef\xbb\xbfWEBVTT\r\n\r\n00:01.000 --> 00:02.500\r\nline one\r\nline two\r\n"
    )
    assert read_transcript(vtt) == [Cue(1.0, 2.5, "line one\nline two")]
    txt = tmp_path / "b.TXT"
    txt.write_text("  Some words\nover two lines \n")
    assert read_transcript(txt) == [Cue(0.0, math.inf, "Some words over two lines")]


# --- bad zips ------------------------------------------------------------------------------


def test_not_a_zip(tmp_path):
    text = tmp_path / "data.zip"
    text.write_text("this is not a zip\n")
    with pytest.raises(DatasetError, match="(?s)data.zip: not a zip file.*talk1.mp3 \\+ talk1.vtt"):
        load_dataset(text, tmp_path / "w")
    (tmp_path / "empty.zip").touch()
    with pytest.raises(DatasetError, match="not a zip file"):
        load_dataset(tmp_path / "empty.zip", tmp_path / "w")


def test_empty_zip(tmp_path):
    with pytest.raises(DatasetError, match="the zip is empty"):
        load_dataset(make_zip(tmp_path / "d.zip", {}), tmp_path / "w")
    only_clutter = {"folder/": b"", "__MACOSX/._a.wav": b"x", ".DS_Store": b"x"}
    with pytest.raises(DatasetError, match="the zip is empty"):
        load_dataset(make_zip(tmp_path / "d.zip", only_clutter), tmp_path / "w")


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("../evil.wav", "'..' leads outside"),
        ("data/../../evil.wav", "'..' leads outside"),
        ("..\\evil.wav", "'..' leads outside"),
        ("/etc/x.wav", "absolute path"),
        ("C:\\evil.wav", "absolute path"),
        ("C:/evil.wav", "absolute path"),
    ],
)
def test_unsafe_paths_are_refused_before_extracting_anything(tmp_path, entry, why):
    data = make_zip(tmp_path / "d.zip", {"good.wav": b"RIFF", "good.vtt": "WEBVTT\n", entry: b"x"})
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(DatasetError, match=f"(?s)unsafe entries.*{why}"):
        safe_extract(data, dest)
    assert not (tmp_path / "deep" / "evil.wav").exists() and not (tmp_path / "evil.wav").exists()
    assert not dest.exists() or list(dest.iterdir()) == []


def test_names_are_normalised_and_clashes_refused(tmp_path):
    # macOS writes decomposed accents (NFD); Windows tools may write "\\" as the separator
    nfd = {"talks\\cafe\u0301.wav": b"RIFF", "talks/caf\u00e9.vtt": "WEBVTT\n"}
    pairs, _ = find_pairs(safe_extract(make_zip(tmp_path / "a.zip", nfd), tmp_path / "a"))
    assert [(a.name, t.name) for a, t in pairs] == [("caf\u00e9.wav", "caf\u00e9.vtt")]
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = make_zip(tmp_path / "b.zip", {"x/a.wav": b"1", "x/b.wav": b"2"})
        with zipfile.ZipFile(twice, "a") as zf:
            zf.writestr("x/a.wav", b"3")
    with pytest.raises(DatasetError, match="x/a.wav: the zip holds this name twice"):
        safe_extract(twice, tmp_path / "b")
    clash = make_zip(tmp_path / "c.zip", {"x": b"a file", "x/a.wav": b"under a folder x"})
    with pytest.raises(DatasetError, match="x/a.wav: the zip holds this name twice"):
        safe_extract(clash, tmp_path / "c")


def test_symlink_entry_is_refused(tmp_path):
    link = zipfile.ZipInfo("talk.wav")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
        zf.writestr("talk.vtt", "WEBVTT\n")
    with pytest.raises(DatasetError, match="'talk.wav': symbolic link"):
        load_dataset(tmp_path / "d.zip", tmp_path / "w")


def test_zip_bomb_is_refused(tmp_path):
    # 50 MB of zeros deflates to ~50 KB: about 1000:1
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.wav", bytes(50 * 1024**2))
        zf.writestr("bomb.vtt", "WEBVTT\n")
    with pytest.raises(DatasetError, match=r"(?s)too much data.*bomb.wav: compressed \d+:1"):
        load_dataset(tmp_path / "bomb.zip", tmp_path / "w")
    assert not any((tmp_path / "w").rglob("bomb.wav"))


def test_unpacked_size_limit(tmp_path):
    noise = np.random.default_rng(0).bytes(5000)
    data = make_zip(tmp_path / "d.zip", {"a.wav": noise, "b.wav": noise})
    limits = DatasetLimits(max_unpacked_bytes=8000)
    with pytest.raises(DatasetError, match="all files together unpack to"):
        safe_extract(data, tmp_path / "out", limits)
    with pytest.raises(DatasetError, match="a.wav: unpacks to"):
        safe_extract(data, tmp_path / "out", DatasetLimits(max_unpacked_bytes=4000))


def test_header_that_lies_about_the_size(tmp_path):
    """An entry whose central directory claims 1000 bytes but holds 100 KB."""
    path = make_zip(tmp_path / "liar.zip", {"liar.wav": bytes(100_000), "liar.vtt": "WEBVTT\n"})
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")  # the first central directory record: liar.wav
    struct.pack_into("<I", raw, central + 24, 1000)  # its uncompressed size
    path.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match="liar.wav|corrupt"):
        safe_extract(path, dest)
    assert all(f.stat().st_size <= 1000 for f in dest.rglob("*") if f.is_file())


def test_too_many_files(tmp_path):
    files = {f"clips/c{i:04d}.{s}": b"x" for i in range(300) for s in ("wav", "vtt")}
    with pytest.raises(DatasetError, match="600 files, more than the limit of 500"):
        load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "w", limits=DatasetLimits(500))


# --- bad pairs and recordings --------------------------------------------------------------


def test_unpaired_files_are_listed_together(speech, tmp_path):
    wav = audio_bytes(speech[SHORT], tmp_path)
    vtt = write_vtt([Cue(0.0, 2.5, SHORT)])
    files = {
        "ok.wav": wav,
        "ok.vtt": vtt,
        "a/lonely.wav": wav,
        "b/orphan.vtt": vtt,
        "c/both.mp3": wav,
        "c/both.vtt": vtt,
        "c/both.srt": write_srt([Cue(0.0, 2.5, SHORT)]),
        "d/Talk.wav": wav,
        "d/talk.vtt": vtt,
        "notes.md": "# my notes",
    }
    data = make_zip(tmp_path / "d.zip", files)
    with pytest.raises(DatasetError) as info:
        load_dataset(data, tmp_path / "w")
    message = str(info.value)
    assert "a/lonely.wav: has no transcript; add a/lonely.vtt" in message
    assert "b/orphan.vtt: has no audio file with the same name" in message
    assert "c/both.srt, c/both.vtt: two transcripts" in message
    assert "d/Talk.wav: has no transcript" in message and "is it 'talk'?" in message
    assert "skip_bad_files" in message
    assert len(info.value.problems) == 5
    # skipped with warnings on request; never paired wrongly
    ds = load_dataset(data, tmp_path / "w", skip_bad=True, validation_fraction=0)
    assert [e.recording for e in ds.train] == ["ok.wav"]
    assert sum(w.startswith("skipped") for w in ds.warnings) == 5
    assert any("notes.md" in w for w in ds.warnings)


def test_no_pairs_explains_the_layout(tmp_path):
    with pytest.raises(DatasetError, match="(?s)no audio file paired.*talk1.mp3 \\+ talk1.vtt"):
        load_dataset(make_zip(tmp_path / "d.zip", {"readme.md": "hi"}), tmp_path / "w")
    root = tmp_path / "root"
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="x/a.wav: has no transcript"):
        find_pairs(root, skip_unpaired=True)


VTT_TIMES = "WEBVTT\n\n{}\n"


@pytest.mark.parametrize(
    ("transcript", "match"),
    [
        (
            "WEBVTT\n\n00:00:00.000 --> 00:00:xx.000\nhello\n",
            r"rec.vtt: line 3: malformed timestamp '00:00:xx.000'",
        ),
        (
            "WEBVTT\n\n00:00.000 --> 00:10.000\nhello\n",
            r"rec.wav: cue 00:00.000 --> 00:10.000 ends after the end of the audio, which is "
            r"00:02.\d+ \(2.\d s\) long",
        ),
        (
            "WEBVTT\n\n00:00.000 --> 00:01.500\nhello\n\n00:00.500 --> 00:02.000\nworld\n",
            r"cue 00:00.500 --> 00:02.000 overlaps the cue before it \(00:00.000 --> "
            r"00:01.500\) by 1.00 s",
        ),
        (
            "WEBVTT\n\n00:01.000 --> 00:02.000\nworld\n\n00:00.000 --> 00:01.000\nhello\n",
            r"cues out of order: cue 00:00.000 --> 00:01.000 comes after cue 00:01.000",
        ),
        ("WEBVTT\n\nNOTE nothing here\n", "rec.vtt: the transcript is empty"),
        (b"WEBVTT\n\n00:00.000 --> 00:02.000\ncaf\xe9\n", r"rec.vtt: the text is not UTF-8"),
    ],
    ids=["malformed", "past-end", "overlap", "out-of-order", "empty", "latin-1"],
)
def test_bad_transcripts(speech, tmp_path, transcript, match):
    files = {"rec.wav": audio_bytes(speech[SHORT], tmp_path), "rec.vtt": transcript}
    with pytest.raises(DatasetError, match=match):
        load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "w")


def test_cue_longer_than_30_s(speech, tmp_path):
    audio = np.concatenate([speech[SHORT], silence(44)])
    files = {
        "long.flac": audio_bytes(audio, tmp_path, ".flac"),
        "long.srt": write_srt([Cue(0.0, 45.0, SHORT)]),
    }
    with pytest.raises(DatasetError, match=r"long.flac: cue 00:00.000 --> 00:45.000 is 45.0 s "):
        load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "w")
    with pytest.raises(DatasetError, match="split it into shorter cues"):
        load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "w")


def test_txt_needs_a_clip_of_at_most_30_s(long_recording, tmp_path):
    audio, _ = long_recording
    files = {"talk.wav": audio_bytes(audio, tmp_path), "talk.txt": "all the words"}
    with pytest.raises(DatasetError, match=r"talk.wav: the audio is \d+.\d s long.*use a .vtt"):
        load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "w")


def test_every_bad_recording_is_listed_in_one_error(speech, tmp_path):
    cue = write_vtt([Cue(0.0, 2.0, SHORT)])
    files = {
        "good.wav": audio_bytes(speech[SHORT], tmp_path),
        "good.vtt": cue,
        "quiet/silent.wav": audio_bytes(silence(3.0), tmp_path),
        "quiet/silent.vtt": cue,
        "notes/broken.wav": "these are my meeting notes, not audio\n" * 20,
        "notes/broken.vtt": cue,
        "latin/latin.wav": audio_bytes(speech[SHORT], tmp_path),
        "latin/latin.vtt": "WEBVTT\n\n00:00.000 --> 00:02.000\ncafé\n".encode("latin-1"),
    }
    data = make_zip(tmp_path / "d.zip", files)
    with pytest.raises(DatasetError) as info:
        load_dataset(data, tmp_path / "w")
    message = str(info.value)
    assert "3 of 4 recordings cannot be used" in message
    assert "quiet/silent.wav: no sound" in message
    assert "notes/broken.wav: not a readable audio or video file" in message
    assert "latin/latin.vtt: the text is not UTF-8" in message

    ds = load_dataset(data, tmp_path / "w", skip_bad=True, validation_fraction=0)
    assert [e.recording for e in ds.train] == ["good.wav"]
    assert len(ds.warnings) == 3
    assert any(w.startswith("skipped quiet/silent.wav: no sound") for w in ds.warnings)

    del files["good.wav"], files["good.vtt"]
    with pytest.raises(DatasetError, match="none of the recordings can be used"):
        load_dataset(make_zip(tmp_path / "d.zip", files), tmp_path / "w", skip_bad=True)


def test_too_small_to_split(speech, tmp_path):
    files = {
        "one.wav": audio_bytes(speech[SHORT], tmp_path),
        "one.vtt": write_vtt([Cue(0, 2, "hi")]),
    }
    data = make_zip(tmp_path / "d.zip", files)
    with pytest.raises(DatasetError, match="(?s)too small to split.*validation_fraction=0"):
        load_dataset(data, tmp_path / "w")
    assert len(load_dataset(data, tmp_path / "w", validation_fraction=0).train) == 1


def test_total_audio_limit(speech, tmp_path):
    wav, vtt = audio_bytes(speech[SHORT], tmp_path), write_vtt([Cue(0, 2, "hi")])
    data = make_zip(tmp_path / "d.zip", {"a.wav": wav, "a.vtt": vtt, "b.wav": wav, "b.vtt": vtt})
    with pytest.raises(DatasetError, match="more than 4 s of audio in all"):
        load_dataset(data, tmp_path / "w", limits=DatasetLimits(max_total_seconds=4.0))
    with pytest.raises(DatasetError, match="a.wav: audio is longer than the limit"):
        load_dataset(data, tmp_path / "w", limits=DatasetLimits(max_recording_seconds=1.0))


def test_several_zips_are_pooled_and_limited_together(speech, tmp_path):
    """more_train_data: the recordings of every zip train together, the later zips' named
    by their zip, and the total-audio limit counts all of them."""
    wav, vtt = audio_bytes(speech[SHORT], tmp_path), write_vtt([Cue(0, 2, "hi")])
    first = make_zip(tmp_path / "first.zip", {"a.wav": wav, "a.vtt": vtt})
    second = make_zip(tmp_path / "second.zip", {"a.wav": wav, "a.vtt": vtt})
    ds = load_dataset([first, second], tmp_path / "w", validation_fraction=0)
    assert sorted(e.recording for e in ds.train) == ["a.wav", "second.zip/a.wav"]
    assert ds.recordings == 2
    with pytest.raises(DatasetError, match="second.zip: more than 4 s of audio in all"):
        load_dataset([first, second], tmp_path / "w", limits=DatasetLimits(max_total_seconds=4.0))


def test_windows_are_read_from_disk_when_used(good_files, tmp_path):
    """A loaded dataset holds spans of decoded samples on disk, not the samples: they are
    read (the same samples) when a batch is built."""
    from whisper_ft.dataset import AudioSpan, samples

    ds = load_dataset(make_zip(tmp_path / "data.zip", good_files), tmp_path / "work")
    for ex in ds.train + ds.validation:
        assert isinstance(ex.audio, AudioSpan)
        audio = samples(ex.audio)
        assert audio.dtype == np.float32 and audio.size == ex.audio.size
        assert np.array_equal(samples(ex.audio[10:20]), audio[10:20])
