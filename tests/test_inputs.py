"""The inputs' declarations: readable by Cog without running the entry points, and kept equal
to the settings that own their defaults, bounds and choices."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from cog import Input

from whisper_ft.inputs import InputError, declared_inputs, inputs_declared
from whisper_ft.subtitles import CueRules
from whisper_ft.transcribe import TranscribeSettings

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = (("predict.py", "run"), ("train.py", "train"))


def literal(node: ast.expr) -> bool:
    """What Cog's schema generator reads from source: constants, negative numbers, lists."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return isinstance(node.operand, ast.Constant)
    if isinstance(node, ast.List | ast.Tuple):
        return all(isinstance(item, ast.Constant) for item in node.elts)
    return False


@pytest.mark.parametrize(("filename", "function"), ENTRY_POINTS)
def test_every_input_is_a_literal_input_declaration(filename, function):
    """Cog builds the schema from the source (`cog build`, `cog push`, `cog predict`): a
    default that is not a literal `Input(...)` fails the build or is read as null."""
    tree = ast.parse((ROOT / filename).read_text())
    found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    assert len(found) == 1
    arguments = found[0].args
    declared = dict(zip(reversed(arguments.args), reversed(arguments.defaults), strict=False))
    assert len(declared) >= 20
    for parameter, default in declared.items():
        assert isinstance(default, ast.Call) and ast.unparse(default.func) == "Input", (
            f"{filename}: {parameter.arg} is not declared with Input(...)"
        )
        for keyword in default.keywords:
            assert literal(keyword.value), (
                f"{filename}: {parameter.arg}: {keyword.arg}={ast.unparse(keyword.value)} "
                "is not a literal"
            )


def test_an_input_that_differs_from_its_setting_fails_when_declared():
    with pytest.raises(TypeError, match=r"input beam_size declares le=20, but "):

        @inputs_declared(TranscribeSettings)
        def run(beam_size: int = Input(default=5, ge=1, le=20)) -> None: ...

    @inputs_declared(TranscribeSettings, CueRules)
    def agreeing(
        beam_size: int = Input(default=5, ge=1, le=10, description="any help"),
        max_line_width: int = Input(default=42, ge=1, le=200),
    ) -> None: ...

    assert declared_inputs(agreeing)["max_line_width"][1].le == 200


def test_the_trainer_limits_restate_the_dataset_limits():
    import train
    from whisper_ft.dataset import DatasetLimits

    limits, declared = DatasetLimits(), declared_inputs(train.train)
    assert declared["max_dataset_hours"][1].default * 3600 == limits.max_total_seconds
    assert declared["max_recording_hours"][1].default * 3600 == limits.max_recording_seconds
    assert declared["max_unpacked_gb"][1].default * 1024**3 == limits.max_unpacked_bytes
    assert declared["max_files"][1].default == limits.max_files


def test_settings_built_in_python_keep_the_declared_bounds():
    with pytest.raises(InputError, match="beam_size: 11 is above the maximum of 10"):
        TranscribeSettings(beam_size=11).validate(multilingual=True)
    with pytest.raises(InputError, match="max_line_count: 0 is below the minimum of 1"):
        CueRules(max_line_count=0).validate()


def test_a_missing_file_input_is_a_clear_error_on_the_command_line(tmp_path, capsys):
    from whisper_ft.__main__ import main

    for command, name in (("train", "train_data"), ("predict", "audio")):
        assert main([command, "-o", str(tmp_path)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: {name} is required: "), error


def test_an_input_that_may_be_left_empty_is_left_empty_when_given_empty():
    import train
    from whisper_ft.inputs import check_inputs

    given = {
        "train_data": ROOT / "README.md",
        "learning_rate": "",
        "lora_layers": "",
        "change_weight": "0",
    }
    checked = check_inputs(train.train, given)
    assert checked["learning_rate"] is None  # chosen by the data, as when not given
    assert checked["lora_layers"] is None  # a choice left empty: chosen as well
    assert checked["change_weight"] == 0.0  # a value given is kept, a 0 included
    with pytest.raises(InputError, match="learning_rate: 'fast' is not a valid float"):
        check_inputs(train.train, {**given, "learning_rate": "fast"})
