"""report: the --json envelope every command's result goes out in (the CLI contract is pinned end
to end in test_cli.py)."""

from __future__ import annotations

import json

import pytest

from deployer import report


def envelope_of(capsys: pytest.CaptureFixture[str]) -> dict:
    out = capsys.readouterr().out
    assert out.count("\n{") == 0 and out.endswith("}\n"), out  # exactly one object
    return json.loads(out)


def test_a_result_goes_out_once_when_the_command_ends(capsys: pytest.CaptureFixture[str]) -> None:
    with report.json_envelope("status"):
        report.emit_json([{"host": "a"}])
        assert capsys.readouterr().out == ""  # not before the command ends
    assert envelope_of(capsys) == {"version": 1, "command": "status", "ok": True, "exit_code": 0,
                                   "data": [{"host": "a"}], "errors": []}


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (None, 0), (3, 3), ("text", 1)])
def test_ok_and_exit_code_are_the_exit(capsys: pytest.CaptureFixture[str], code: object,
                                       expected: int) -> None:
    with pytest.raises(SystemExit), report.json_envelope("logs"):
        report.emit_json({"n": 1})
        raise SystemExit(code)
    found = envelope_of(capsys)
    assert (found["ok"], found["exit_code"], found["data"]) == (expected == 0, expected, {"n": 1})


def test_an_error_before_any_result(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), report.json_envelope("render"):
        report.error("deployments/env-x:3: TF_VAR_a is empty\nand a second line")
        raise RuntimeError("boom")
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "version": 1, "command": "render", "ok": False, "exit_code": 1, "data": None,
        "errors": ["deployments/env-x:3: TF_VAR_a is empty\nand a second line"]}
    assert captured.err == "error: deployments/env-x:3: TF_VAR_a is empty\nerror: and a second line\n"


def test_one_result_per_command_and_only_inside_an_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError, match="one result per command"):
        report.emit_json({})
    with pytest.raises(RuntimeError, match="one result per command"), report.json_envelope("graph"):
        report.emit_json({"phases": []})
        report.emit_json({"phases": []})
    assert envelope_of(capsys)["ok"] is False
