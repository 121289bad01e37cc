"""Command line: the Cog predictor and trainer without Docker, with Cog's `-i` syntax.

    python -m whisper_ft predict -i audio=@clip.mp3 -i task=translate
    python -m whisper_ft train -i train_data=@data.zip -i base_model=tiny.en
    python -m whisper_ft weights base          # prepare an embedded model ahead of time
    python -m whisper_ft studio                # the web studio on http://127.0.0.1:8765

Inputs are checked against the `Input(...)` declarations in predict.py / train.py (one source
of truth). The output is printed as JSON on stdout; files are written to --output-dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from whisper_ft import progress
from whisper_ft.inputs import (
    InputError,
    check_inputs,
    declared_inputs,
    load_entry,
    parse_cli_value,
)

logger = logging.getLogger("whisper_ft")


def parse_inputs(fn, pairs: list[str]) -> dict:
    declared = declared_inputs(fn)
    raw = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"-i {pair!r}: write inputs as name=value (files as name=@path)")
        if name not in declared:
            raise InputError(f"unknown input {name!r}; the inputs are: {', '.join(declared)}")
        raw[name] = parse_cli_value(declared[name][0], value)
    return check_inputs(fn, raw)


def to_jsonable(value, out_dir: Path):
    """Output -> JSON; each file is moved to out_dir and shown as its path."""
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {k: to_jsonable(v, out_dir) for k, v in fields.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, out_dir) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v, out_dir) for k, v in value.items()}
    if isinstance(value, Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / value.name
        if Path(value).resolve() != target.resolve():
            shutil.move(str(value), target)
        return str(target)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m whisper_ft", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("predict", "train"):
        p = sub.add_parser(command, help=f"run {command}.py as Cog would")
        p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE")
        p.add_argument("-o", "--output-dir", type=Path, default=Path("outputs"))
        if command == "predict":
            p.add_argument(
                "--weights",
                default=os.environ.get("COG_WEIGHTS"),
                help="model to serve: a weights archive or URL from training, a directory, "
                "`base`, `tiny.en` or a hub id (default: $COG_WEIGHTS, $WHISPER_FT_MODEL, base)",
            )
    s = sub.add_parser("studio", help="the web studio: transcribe, correct, train, compare")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--data", type=Path, default=Path("studio"), help="where its files are kept")
    s.add_argument(
        "--token",
        default=os.environ.get("WHISPER_FT_STUDIO_TOKEN"),
        help="required by every request (needed for any --host but 127.0.0.1)",
    )
    s.add_argument("--max-upload-mb", type=int, default=2048, help="largest upload accepted")
    w = sub.add_parser("weights", help="prepare embedded models (CTranslate2 and Hugging Face)")
    w.add_argument("names", nargs="*", default=["base"], help="base, tiny.en")
    w.add_argument("--serving-only", action="store_true", help="skip the Hugging Face form")
    args = parser.parse_args(argv)
    progress.configure_logging()
    try:
        return _run(args)
    except (InputError, ValueError, OSError) as e:
        logger.debug("error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        progress.report_error(str(e))
        return 2


def _run(args) -> int:
    if args.command == "weights":
        from whisper_ft import weights

        for name in args.names:
            if name not in weights.EMBEDDED:
                raise InputError(
                    f"unknown embedded model {name!r}; use {', '.join(weights.EMBEDDED)}"
                )
            paths = {"ct2": str(weights.embedded_ct2(name))}
            if not args.serving_only:
                paths["hf"] = str(weights.embedded_hf(name))
            print(json.dumps({name: paths}))
        return 0
    if args.command == "studio":
        from whisper_ft.studio.server import serve

        serve(args.host, args.port, args.data, args.token, args.max_upload_mb)
        return 0
    if args.command == "predict":
        predictor_class = load_entry("predict.py", "Predictor")
        inputs = parse_inputs(predictor_class.run, args.input)
        predictor = predictor_class()
        predictor.setup(weights=args.weights)
        output = predictor.run(**inputs)
    else:
        train = load_entry("train.py", "train")
        inputs = parse_inputs(train, args.input)
        # A stop request (SIGTERM, as from a job runner or torchrun) ends the run like Ctrl-C,
        # so that its state is kept (state_dir) and the run can be resumed.
        signal.signal(signal.SIGTERM, _interrupt)
        output = train(**inputs)
        if output is None:  # a worker process of a multi-process run: the main one reports
            return 0
    print(json.dumps(to_jsonable(output, args.output_dir), ensure_ascii=False, indent=2))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
