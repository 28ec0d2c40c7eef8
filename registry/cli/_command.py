"""What every `vpr` command shares: a parser whose errors are raised (UsageError) instead of printed, and the one
handler a command's `main` runs its body in, which turns errors into a message on stderr and an exit status: 2 for a
UsageError (a bad option, whether argparse, a config or the library found it), 1 for the failures the command lists.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Mapping, NoReturn, Optional

from .._util.options import UsageError

# an exception type a command can fail with -> its message (None: str(error))
Failures = Mapping[type, Optional[Callable[[BaseException], str]]]


class _Exited(Exception):
    """argparse finished the command itself (--help): the status to return."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError and whose --help returns through `run_command`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exited(status)


def parser(prog: str, description: Optional[str], epilog: Optional[str] = None) -> Parser:
    """A command's parser, its description and epilog shown as written."""
    return Parser(prog=prog, description=description, epilog=epilog,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def run_command(prog: str, body: Callable[[], int], failures: Failures = {}) -> int:
    """`body()`'s exit status, or 2 with `PROG: error: MESSAGE` for a UsageError, or 1 with the message of one of
    `failures` (other exceptions propagate: they are bugs, their traceback is the report)."""
    try:
        return body()
    except _Exited as done:
        return done.status
    except UsageError as err:
        sys.stderr.write(f"{prog}: error: {err}\n(run '{prog} --help' for every option)\n")
        return 2
    except tuple(failures) as err:
        describe = next(f for t, f in failures.items() if isinstance(err, t)) or str
        sys.stderr.write(f"{prog}: error: {describe(err)}\n")
        return 1
