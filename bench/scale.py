"""Training in one process against several: step time and examples per second, side by side.

    .venv/bin/python -m bench.scale                      # tiny.en, 1 and 2 processes on CPU
    .venv/bin/python -m bench.scale --processes 1 2 4 --steps 24 --model base

Each run is the command line a user starts (`python -m whisper_ft train`, under `torchrun
--nproc-per-node=N` for N > 1) on the fine-tuning benchmark's dataset (tests/vocab.py: eight
terms, four espeak-ng voices, 2.6 min of audio), the default recipe cut to --steps optimizer
steps. With N processes each step trains N batches (one per process, gradients averaged), so
the fair comparison is examples per second; step time shows the cost of the exchange. The
figures come from the run's own step log (training only: loading, scoring and export are
left out), read between its second and its last step. Peak memory is the resident set of the
run's largest process (getrusage of the run's children).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests import vocab

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# Runs the command and reports the peak resident set of the largest process it started.
PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)
STEP_LOG = re.compile(r"(\d\d):(\d\d):(\d\d),(\d+) INFO whisper_ft\.finetune: step (\d+)/\d+ ")


def step_times(log: str) -> list[tuple[int, float]]:
    """(step, seconds of the day) of every step line in a training log."""
    return [
        (int(m[5]), int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1000)
        for m in STEP_LOG.finditer(log)
    ]


def run(data: Path, model: str, processes: int, steps: int, batch: int, folder: Path) -> dict:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    inputs = [f"train_data=@{data}", f"base_model={model}", f"max_steps={steps}"]
    inputs += [f"batch_size={batch}", "validation_fraction=0"]
    command = [*launcher, "-m", "whisper_ft", "train", *(x for i in inputs for x in ("-i", i))]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, *command, "-o", str(folder / f"out{processes}")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(folder)},
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    times = step_times(done.stderr)
    (first, began), (last, ended) = times[1], times[-1]
    per_step = (ended - began) / (last - first)
    peak = int(re.findall(r"^PEAK_KB (\d+)$", done.stderr, re.M)[-1]) / 1024
    return {
        "processes": processes,
        "peak_mb_largest_process": round(peak),
        "steps": last,
        "seconds_per_step": round(per_step, 2),
        "examples_per_second": round(batch * processes / per_step, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = vocab.training_zip(
            folder / "data", terms=vocab.BENCH_TERMS, voices=vocab.TRAIN_VOICES, every_voice=False
        )
        rows = [
            run(data, args.model, n, args.steps, args.batch_size, folder) for n in args.processes
        ]
    print(f"| {args.model}, batch {args.batch_size} a process | s/step | examples/s | peak RSS |")
    print("|---|---|---|---|")
    for row in rows:
        n = row["processes"]
        print(
            f"| {n} process{'es' if n > 1 else ''} | {row['seconds_per_step']} | "
            f"{row['examples_per_second']} | {row['peak_mb_largest_process']} MB |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scale-{args.model}.json"
    out.write_text(
        json.dumps({"model": args.model, "cpus": os.cpu_count(), "runs": rows}, indent=1)
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
