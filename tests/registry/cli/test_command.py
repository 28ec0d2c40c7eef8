"""registry.cli._command: the one handler every command exits through."""
from __future__ import annotations

import pytest

from registry._util.options import UsageError
from registry.cli._command import parser, run_command


class Broken(Exception):
    pass


def test_a_usage_error_exits_2_and_a_listed_failure_1_each_with_one_message(capsys):
    def bad_option() -> int:
        raise UsageError("--x 3: must be even")

    assert run_command("vpr demo", bad_option) == 2
    assert capsys.readouterr().err == "vpr demo: error: --x 3: must be even\n(run 'vpr demo --help' for every option)\n"

    def broken() -> int:
        raise Broken("the disk went away")

    assert run_command("vpr demo", broken, {Broken: None}) == 1
    assert capsys.readouterr().err == "vpr demo: error: the disk went away\n"
    assert run_command("vpr demo", broken, {Broken: lambda err: f"wrapped: {err}"}) == 1
    assert capsys.readouterr().err == "vpr demo: error: wrapped: the disk went away\n"
    with pytest.raises(Broken):  # not listed: a bug, with its traceback
        run_command("vpr demo", broken)
    assert run_command("vpr demo", lambda: 0) == 0


def test_the_parsers_errors_and_help_return_through_the_handler(capsys):
    p = parser("vpr demo", "a demo command")
    p.add_argument("--n", type=int, required=True, help="a number")
    assert run_command("vpr demo", lambda: p.parse_args(["--n", "x"]) and 0) == 2
    assert "vpr demo: error: argument --n: invalid int value: 'x'" in capsys.readouterr().err
    assert run_command("vpr demo", lambda: p.parse_args(["--help"]) and 0) == 0
    assert capsys.readouterr().out.startswith("usage: vpr demo")
    assert run_command("vpr demo", lambda: p.parse_args(["--n", "4"]).n) == 4
