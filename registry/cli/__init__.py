"""The command lines: one `vpr` console script with one subcommand per module of this package.

    vpr bench              compare models on real datasets               (registry.cli.bench)
    vpr train              train a registry model                        (registry.cli.train)
    vpr whitening-sweep    Recall@N of trained models per whitening size (registry.cli.sweep)
    vpr export             export a model to ONNX                        (registry.cli.export)
    vpr release            build bundled releases / publish them         (registry.cli.release)
    vpr map                build / add to / query / describe a map       (registry.cli.maps)
    vpr serve              serve a map over HTTP                         (registry.cli.serve)

`python -m registry.cli ...` is the same command (torchrun: `torchrun ... -m registry.cli train ...`). This layer
sits on top: it imports the library, and nothing in the library imports it.
"""
from __future__ import annotations

import importlib
import sys
from typing import Dict, Optional, Sequence, Tuple

PROG = "vpr"
# subcommand -> (module of this package with main(argv, prog), one-line summary); registered here, in one place
COMMANDS: Dict[str, Tuple[str, str]] = {
    "bench": ("bench", "compare VPR models on real datasets: Recall@N, size, GFLOPs, speed, memory"),
    "train": ("train", "train a registry model (ClusVPR, NetVLAD, GeM, plugins) with one recipe and budget"),
    "whitening-sweep": ("sweep", "Recall@N of trained models at several whitening sizes, chosen on validation"),
    "export": ("export", "export a registry model to ONNX, checked with onnxruntime"),
    "release": ("release", "bundle finished training runs as releases (build) or push them to the Hub (publish)"),
    "map": ("maps", "build a map of your own images, add to it, query it (single frames or sequences), describe it"),
    "serve": ("serve", "serve a map over HTTP: localize images, sequence matching, metrics, a page (extra: serve)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Run `prog <command> ...`; returns the exit status (each command's: 2 for a bad option)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        sys.stderr.write(f"{prog}: error: unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)})\n")
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    return module.main(rest, prog=f"{prog} {name}")


def console_main() -> int:
    """The `vpr` console script."""
    return main()
