"""A training run's state on disk, so that a killed or canceled run can be continued.

    state_dir/
      state.json          format, where the run stands (epoch, steps), its history, the best
                          epoch so far, what it was trained on (checked on resume)
      adapter.safetensors the LoRA weights now
      best.safetensors    the LoRA weights of the best epoch so far
      optimizer.pt        AdamW's moments (tensors only: read back with weights_only=True)
      rng-<rank>.json     each process's data-order and augmentation random state
      rng-<rank>.safetensors  each process's torch random state (dropout; CPU and GPU)

The state is written after every epoch and when a run is canceled or interrupted, at an
optimizer-step boundary. Each file is written aside and renamed into place; `state.json` goes
last, so a run killed while saving leaves the previous state whole. A resumed run repeats the
random draws of the steps it skips, so it ends where the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "whisper-ft-run-state/1"


class RunStateError(ValueError):
    """A `resume_from` that is not a run state, or one from another run."""


@dataclass
class Position:
    """Where a run stands: the epoch in progress and the optimizer steps done in it."""

    epoch: int = 1
    steps_in_epoch: int = 0
    step: int = 0  # optimizer steps done in all
    losses: list[float] = field(default_factory=list)  # this epoch's losses so far
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None  # the epoch kept so far (finetune.keeps)
    before: dict = field(default_factory=dict)  # WERs before training, the vocabulary


def _replace(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def torch_random_state() -> dict[str, torch.Tensor]:
    """torch's generators (CPU, and this process's GPU where there is one): dropout's draws."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_torch_random_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_process(
    state_dir: Path, rank: int, python_rng: tuple, torch_rng: dict[str, torch.Tensor]
) -> None:
    """One process's random state: the Python generator at the start of the epoch in
    progress (its draws are repeated on resume) and torch's (torch_random_state) now."""
    state_dir.mkdir(parents=True, exist_ok=True)
    version, internal, gauss = python_rng
    _replace(
        state_dir / f"rng-{rank}.json",
        lambda p: p.write_text(json.dumps([version, list(internal), gauss])),
    )
    _replace(
        state_dir / f"rng-{rank}.safetensors",
        lambda p: save_file({k: v.contiguous() for k, v in torch_rng.items()}, str(p)),
    )


def save_run(
    state_dir: Path,
    position: Position,
    identity: dict,
    adapter: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor] | None,
    optimizer: dict,
    scheduler: dict,
) -> None:
    """The main process's part: weights, optimizer, schedule, position; state.json last."""
    state_dir.mkdir(parents=True, exist_ok=True)
    _replace(state_dir / "adapter.safetensors", lambda p: save_file(_cpu(adapter), str(p)))
    if best is not None:
        _replace(state_dir / "best.safetensors", lambda p: save_file(_cpu(best), str(p)))
    _replace(state_dir / "optimizer.pt", lambda p: torch.save(optimizer, p))
    record = {
        "format": FORMAT,
        "identity": identity,
        "position": position.__dict__,
        "scheduler": scheduler,
    }
    _replace(state_dir / "state.json", lambda p: p.write_text(json.dumps(record, indent=1)))


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


@dataclass
class Saved:
    """A run state read back from disk."""

    position: Position
    adapter: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict
    scheduler: dict
    python_rng: tuple
    torch_rng: dict[str, torch.Tensor]


def read_record(state_dir: Path) -> dict:
    """state.json of a run state, or a RunStateError saying what `resume_from` should be."""
    record_path = Path(state_dir) / "state.json"
    if not record_path.is_file():
        raise RunStateError(
            f"resume_from: {state_dir} is not a run state (no state.json); give the state_dir "
            "of an earlier training"
        )
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as e:
        raise RunStateError(f"resume_from: {record_path} cannot be read ({e})") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RunStateError(f"resume_from: {state_dir} is not a {FORMAT} run state")
    return record


def _flat(identity: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in identity.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def load_run(state_dir: Path, identity: dict, rank: int) -> Saved:
    """Read a run state for process `rank`, checking that it comes from the same run
    (same base model, data, settings and number of processes) as the one resuming."""
    state_dir = Path(state_dir)
    record = read_record(state_dir)
    then, now = _flat(record.get("identity", {})), _flat(identity)
    differences = [
        f"{key}: {then.get(key)!r} then, {value!r} now"
        for key, value in now.items()
        if then.get(key) != value
    ]
    if differences:
        raise RunStateError(
            "resume_from: that run state is from another run; resume it with the same base "
            "model, data, settings and number of processes (" + "; ".join(differences) + ")"
        )
    try:
        version, internal, gauss = json.loads((state_dir / f"rng-{rank}.json").read_text())
        torch_rng = load_file(str(state_dir / f"rng-{rank}.safetensors"))
        best_path = state_dir / "best.safetensors"
        return Saved(
            position=Position(**record["position"]),
            adapter=load_file(str(state_dir / "adapter.safetensors")),
            best=load_file(str(best_path)) if best_path.exists() else None,
            optimizer=torch.load(state_dir / "optimizer.pt", weights_only=True),
            scheduler=record["scheduler"],
            python_rng=(version, tuple(internal), gauss),
            torch_rng=torch_rng,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise RunStateError(f"resume_from: the run state in {state_dir} is incomplete ({e})") from e
