"""Inputs: each setting's default, bounds and choices have one owner, its settings field.

A setting that a request or a training takes is a field of a settings dataclass
(`TranscribeSettings`, `CueRules`, `TrainSettings`, `LoraSettings`) declared with
`setting(...)`: its default, bounds and choices. The settings check themselves with them
(`check_settings`) when they are built in Python, and a request's inputs are mapped onto
them by name (`settings_from`).

Cog reads `predict.py` and `train.py` without running them (its schema is built from their
source), so there each input is a literal `Input(...)` with its help text; for a setting it
restates the field's default, bounds and choices, and `inputs_declared` checks that it does
when the entry point is loaded: the two cannot drift apart. Inputs that are no setting (the
audio, the zips, the limits) are declared there alone.

Cog checks the declared bounds only when a schema was built (`cog build`); a local
`python -m cog.server.http` and this project's command line do not. So both entry points
call `check_inputs` first, and the command line uses `parse_cli_value` to turn `-i name=value`
strings into the declared types, the same way `cog predict -i` does.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cog.input import FieldInfo

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")


class InputError(ValueError):
    """An input value is wrong; the message names the input and what is allowed."""


def setting(default: Any, *, ge=None, le=None, choices=None, max_length=None) -> Any:
    """A settings dataclass field that is also an input: its default, bounds and choices."""
    bounds = {"ge": ge, "le": le, "choices": choices, "max_length": max_length}
    return dataclasses.field(default=default, metadata={"input": bounds})


def check_settings(settings: Any) -> None:
    """Check each declared field of a settings dataclass against its bounds and choices,
    with the messages `check_inputs` gives for the same input."""
    for f in dataclasses.fields(settings):
        value, declared = getattr(settings, f.name), f.metadata.get("input")
        if declared is not None and value is not None:
            _check(f.name, value, FieldInfo(default=f.default, **declared))


def settings_from(settings_class: type, args: dict[str, Any], prefix: str = "", **given: Any):
    """Settings from a request's checked inputs: each field from the input of its name (or
    `prefix` + its name); a tuple field from comma-separated text; `given` fields as given."""
    values = dict(given)
    for f in dataclasses.fields(settings_class):
        name = _input_name(f.name, prefix, args)
        if f.name in values or name is None:
            continue
        value = args[name]
        if isinstance(f.default, tuple) and isinstance(value, str):
            value = tuple(item.strip() for item in value.split(",") if item.strip())
        values[f.name] = value
    return settings_class(**values)


def _input_name(field: str, prefix: str, inputs: dict) -> str | None:
    """The input a settings field is given by: `prefix` + its name, or its name."""
    return next((n for n in (prefix + field, field) if n in inputs), None)


ROOT = Path(__file__).resolve().parent.parent  # the project: predict.py and train.py


def load_entry(filename: str, name: str):
    """Load `name` from predict.py or train.py at the project root, as Cog does."""
    spec = importlib.util.spec_from_file_location(Path(filename).stem, ROOT / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, name)


def inputs_declared(*settings: type | tuple[type, str]) -> Callable[[Callable], Callable]:
    """Decorator for run()/train(): reads the Input(...) declarations at definition time, and
    checks that those of the `settings` fields (a class, or a class and the prefix of its
    inputs' names) restate the fields' defaults, bounds and choices.

    The Cog server replaces the declarations in the function's defaults by their plain default
    values once it has read them, so they must be recorded before it loads the class.
    """

    def record(fn: Callable) -> Callable:
        fn.__declared_inputs__ = _read_declarations(fn)
        for entry in settings:
            settings_class, prefix = entry if isinstance(entry, tuple) else (entry, "")
            _check_restated(fn, settings_class, prefix)
        return fn

    return record


def _check_restated(fn: Callable, settings_class: type, prefix: str) -> None:
    declared = fn.__declared_inputs__
    for f in dataclasses.fields(settings_class):
        owned, name = f.metadata.get("input"), _input_name(f.name, prefix, declared)
        if owned is None or name is None:
            continue
        info = declared[name][1]
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        for key, value in {"default": default, **owned}.items():
            given = getattr(info, key)
            if (list(given) if key == "choices" and given else given) != value:
                raise TypeError(
                    f"{fn.__qualname__}: input {name} declares {key}={given!r}, but "
                    f"{settings_class.__name__}.{f.name} owns {key}={value!r}; restate it"
                )


def declared_inputs(fn: Callable) -> dict[str, tuple[type, FieldInfo]]:
    """name -> (type, FieldInfo) for each parameter of a run()/train() function."""
    recorded = getattr(fn, "__declared_inputs__", None)
    return recorded if recorded is not None else _read_declarations(fn)


def _read_declarations(fn: Callable) -> dict[str, tuple[type, FieldInfo]]:
    hints = typing.get_type_hints(fn)
    found = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name == "self":
            continue
        info = _field_info(param.default)
        found[name] = (_base_type(hints.get(name, str)), info)
    return found


def required_inputs(fn: Callable) -> set[str]:
    """The inputs a call must give, by Cog's rule: no default, and a type that is not
    optional (`audio: Path = Input(...)`, not `Path | None`)."""
    hints = typing.get_type_hints(fn)
    return {
        name
        for name, param in inspect.signature(fn).parameters.items()
        if name != "self"
        and _field_info(param.default).default is None
        and typing.get_origin(hints.get(name)) not in (typing.Union, types.UnionType)
    }


def _is_declaration(value: Any) -> bool:
    """Whether value is an Input(...) declaration. Duck-typed: the Cog server may load the SDK
    under another module name, so its FieldInfo is not always this FieldInfo class."""
    return isinstance(value, FieldInfo) or all(
        hasattr(value, name) for name in FieldInfo.__dataclass_fields__
    )


def _field_info(default: Any) -> FieldInfo:
    if not _is_declaration(default):
        return FieldInfo(default)
    return FieldInfo(**{name: getattr(default, name) for name in FieldInfo.__dataclass_fields__})


def _base_type(annotation: Any) -> type:
    """`Optional[X]` / `X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def parse_cli_value(kind: type, text: str) -> Any:
    """Turn a command-line string into the declared type; `@path` names a file."""
    if issubclass(kind, Path):
        path = Path(text[1:] if text.startswith("@") else text).expanduser()
        if text.startswith(("http://", "https://", "data:")):
            return text
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        return path
    return text


def check_inputs(fn: Callable, values: dict[str, Any]) -> dict[str, Any]:
    """Coerce and check `values` against fn's declarations; return a complete dict.

    Raises InputError naming the input and the allowed values.
    """
    declared = declared_inputs(fn)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise InputError(
            f"unknown input {', '.join(unknown)}; the inputs are: {', '.join(declared)}"
        )
    result = {}
    required = required_inputs(fn)
    for name, (kind, info) in declared.items():
        value = values.get(name, info.default)
        if _is_declaration(value):  # called directly from Python, with the declaration itself
            value = info.default
        if value == "" and info.default is None and (kind is not str or info.choices):
            value = None  # given empty (`-i learning_rate=`): left empty, as by default
        if value is None and name in required:
            raise InputError(f"{name} is required: {info.description or kind.__name__}")
        if value is None:
            result[name] = None
            continue
        value = _coerce(name, kind, value)
        _check(name, value, info)
        result[name] = value
    return result


def _coerce(name: str, kind: type, value: Any) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE:
                return True
            if text in FALSE:
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if not isinstance(value, str | int | float):
                raise ValueError
            return str(value)
        if isinstance(kind, type) and issubclass(kind, Path):
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                return value  # a URL stays a URL (a Path would fold its "//")
            return value if isinstance(value, Path) else Path(str(value))
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: {value!r} is not a valid {kind.__name__}") from e
    return value


def _check(name: str, value: Any, info: FieldInfo) -> None:
    if info.choices is not None and value not in info.choices:
        allowed = ", ".join(str(c) for c in info.choices)
        raise InputError(f"{name}: {value!r} is not allowed; choose one of: {allowed}")
    if info.ge is not None and value < info.ge:
        raise InputError(f"{name}: {value} is below the minimum of {info.ge}")
    if info.le is not None and value > info.le:
        raise InputError(f"{name}: {value} is above the maximum of {info.le}")
    if isinstance(value, str):
        if info.max_length is not None and len(value) > info.max_length:
            raise InputError(f"{name}: longer than {info.max_length} characters")
        if info.min_length is not None and len(value) < info.min_length:
            raise InputError(f"{name}: shorter than {info.min_length} characters")
        if info.regex is not None and not re.fullmatch(info.regex, value):
            raise InputError(f"{name}: {value!r} does not match {info.regex}")
