"""Serving benchmark: the Predictor against the bare engines, on the same audio and weights.

    .venv/bin/python -m bench.serving                 # base model, CPU
    .venv/bin/python -m bench.serving --model tiny.en --transformers

The long-form audio is the English part of ../shared/speech (real people, exact references)
joined into one recording with 1 s pauses, about 7 minutes. Each system transcribes it once;
the table gives wall time, real-time factor (audio seconds per second of compute) and WER
against the joined references. Per-request overhead is the Predictor's `run()` on a short
clip against the bare `WhisperModel.transcribe` with the same settings, repeated.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import shared_speech
from whisper_ft.audio import SAMPLE_RATE, load_audio, write_audio
from whisper_ft.weights import ct2_model, hf_model
from whisper_ft.wer import word_error_rate

RESULTS = Path(__file__).resolve().parent / "results"


def long_recording(folder: Path) -> tuple[Path, str]:
    found = shared_speech.clips("en")
    pause = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([x for clip, _ in found for x in (clip, pause)])
    path = folder / "long.wav"
    write_audio(path, audio)
    return path, " ".join(text for _, text in found)


def timed(fn):
    start = time.perf_counter()
    text = fn()
    return time.perf_counter() - start, text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    parser.add_argument("--transformers", action="store_true", help="also time transformers")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not shared_speech.clips("en"):
        print(f"skipped: {shared_speech.SPEECH} is not here")
        return

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from predict import Predictor
    from whisper_ft.transcribe import Transcriber, default_device

    device, compute = default_device()
    folder = Path(tempfile.mkdtemp())
    audio_path, reference = long_recording(folder)
    seconds = load_audio(audio_path).size / SAMPLE_RATE
    model_dir = ct2_model(args.model)
    engine = WhisperModel(str(model_dir), device=device, compute_type=compute)
    batched = BatchedInferencePipeline(engine)
    predictor = Predictor()
    predictor.setup(weights=str(model_dir))

    def fw_sequential():
        segments, _ = engine.transcribe(str(audio_path), language="en", beam_size=5)
        return " ".join(s.text for s in segments)

    def fw_batched():
        segments, _ = batched.transcribe(str(audio_path), language="en", beam_size=5, batch_size=8)
        return " ".join(s.text for s in segments)

    def ours():
        out = predictor.run(audio=audio_path, language="en", output_formats="srt,vtt,json")
        return out.text

    systems = [
        ("faster-whisper sequential (beam 5)", fw_sequential),
        ("faster-whisper batched (batch 8, VAD)", fw_batched),
        ("whisper-ft Predictor, defaults", ours),
    ]
    if args.transformers:
        systems.append(("transformers generate (fp32, beam 1)", hf_runner(args.model, audio_path)))
    rows = []
    for name, fn in systems:
        wall, text = timed(fn)
        wer = word_error_rate([reference], [text], "en")
        rows.append({"system": name, "wall_s": wall, "rtf": seconds / wall, "wer": wer})
        print(f"{name:42s} {wall:7.1f} s  {seconds / wall:5.1f}x real time  WER {wer:5.2f}%")

    # Per-request overhead: the same short clip, same settings, engine vs Predictor.
    clip = folder / "clip.wav"
    write_audio(clip, load_audio(audio_path)[: 10 * SAMPLE_RATE])
    bare, full = [], []
    transcriber = Transcriber(model_dir)
    for _ in range(args.repeats):
        bare.append(
            timed(
                lambda: list(
                    transcriber.model.transcribe(
                        str(clip), language="en", beam_size=5, vad_filter=False
                    )[0]
                )
            )[0]
        )
        full.append(timed(lambda: predictor.run(audio=clip, language="en"))[0])
    overhead = statistics.median(full) / statistics.median(bare) - 1
    print(f"per-request overhead (10 s clip, median of {args.repeats}): {100 * overhead:+.1f}%")

    RESULTS.mkdir(exist_ok=True)
    summary = {
        "model": args.model,
        "device": f"{device}/{compute}",
        "audio_seconds": seconds,
        "rows": rows,
        "overhead": overhead,
        "bare_median_s": statistics.median(bare),
        "predictor_median_s": statistics.median(full),
    }
    out = RESULTS / f"serving-{args.model}-{device}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"written: {out}")


def hf_runner(model: str, audio_path: Path):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = hf_model(model)
    processor = WhisperProcessor.from_pretrained(path)
    hf = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    audio = load_audio(audio_path)

    def run():
        features = processor.feature_extractor(
            audio,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
        )
        with torch.no_grad():
            ids = hf.generate(
                features.input_features,
                attention_mask=features.attention_mask,
                return_timestamps=True,
                num_beams=1,
                **({"language": "en"} if hf.config.vocab_size >= 51865 else {}),
            )
        return processor.batch_decode(ids, skip_special_tokens=True)[0]

    return run


if __name__ == "__main__":
    main()
