"""`vpr`: one console script, one subcommand per module of registry/cli/, each naming itself in its messages."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from registry import cli


def _vpr(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "registry.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_the_console_script_is_installed_and_lists_every_command():
    exe = shutil.which("vpr")
    assert exe is not None, "pip install -e . registers the `vpr` console script"
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("usage: vpr <command>")
    for name in cli.COMMANDS:
        assert f"  {name} " in done.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help_under_its_own_name(name, capsys):
    assert cli.main([name, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: vpr {name}")


def test_python_m_registry_cli_is_the_same_command(tmp_path):
    done = _vpr("export", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m registry.cli export")


def test_an_unknown_command_exits_2_suggesting_the_closest(capsys):
    assert cli.main(["benhc"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'benhc'; did you mean 'bench'?" in err and "release" in err
    assert cli.main([]) == 2 and "usage: vpr <command>" in capsys.readouterr().out


def test_a_subcommands_argument_error_names_the_subcommand(capsys):
    assert cli.main(["bench", "--batch-size", "0"]) == 2
    assert "vpr bench: error: argument --batch-size: must be >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["release", "frobnicate"]) == 2 and "vpr release: error: argument" in capsys.readouterr().err
