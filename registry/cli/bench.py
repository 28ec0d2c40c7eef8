"""`vpr bench`: compare VPR models on real datasets. Options are RunOptions fields, checked up front into one
immutable registry.bench.RunConfig (bad input fails fast, exit status 2); `main` runs registry.bench.run.

    vpr bench                    # the released clusvpr, netvlad, gem on the embedded Corridor + Nordland test
    vpr bench --untrained --backbone-weights path/to/vgg16.safetensors
    vpr bench --models clusvpr,org/name@<commit>,./my_dir --datasets pitts30k_test --data-root /data
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from .._util.atomic import write_failure
from .._util.options import add_dataclass_arguments
from ..bench.config import RunConfig, RunOptions
from ._command import parser, run_command

PROG = "vpr bench"

DESCRIPTION = """\
Compare visual place recognition models on real datasets: Recall@N, descriptor size, parameters,
GFLOPs, speed, memory and where the weights came from; writes results.json, results.csv,
results.md, Recall@N and speed-vs-recall plots, prediction grids and attention heat maps.

With no arguments it evaluates the released clusvpr, netvlad and gem models (trained on Nordland, bundled
in the package) on the embedded real data: the Corridor (111 queries, 111 database images) and the
Nordland test places 2001..2400 (400 winter queries, 400 summer images), each model at its own input
size, offline, in a few minutes on a CPU. Registry names load their released weights; --untrained
builds them fresh instead: random init, or off-the-shelf with --backbone-weights and k-means centres,
and the output says so, so nobody reads those numbers as trained ones."""

EPILOG = """\
examples:
  vpr bench --models clusvpr_vgg16.nordland,gem --datasets nordland_test --num-preds-to-save 5
  vpr bench --untrained --models netvlad --datasets corridor --input-size 240 320 \\
      --backbone-weights path/to/vgg16.safetensors
  vpr bench --models clusvpr=org/clusvpr-pitts30k@<commit>,./my_model_dir \\
      --datasets pitts30k_test,tokyo247 --data-root /data --num-preds-to-save 20 --save-attention 5

models: a registry name or alias (clusvpr, netvlad, gem, clusvpr_vgg16, gem_resnet50, ...), which loads
its released weights (NAME.TAG picks a release, e.g. clusvpr_vgg16.nordland; --untrained builds it fresh); a Hub repo
org/name or org/name@<commit or tag>; a local folder in the Hub layout (written by save_pretrained);
or NAME=SOURCE to load SOURCE (repo, folder or reference .pth.tar) as registry model NAME.
datasets: a known name (corridor, nordland_test, pitts30k_test, tokyo247, msls_val, ...), a folder
(layout detected) or layout:path; see registry.datasets.load_dataset."""


def build_parser(prog: str = PROG):
    """The runner's argument parser, generated from RunOptions (every option documented in --help)."""
    p = parser(prog, DESCRIPTION, EPILOG)
    add_dataclass_arguments(p, RunOptions)
    return p


def config(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> RunConfig:
    """The RunConfig of a command line (UsageError naming a bad option: argparse's or RunConfig's checks)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return RunConfig.from_options(RunOptions(**vars(build_parser(prog).parse_args(argv))), argv, prog)


def parse_args(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> RunConfig:
    """`config`, as argparse's parse_args behaves: a bad option is reported by the command's handler (one line on
    stderr) and raises SystemExit with its status (2)."""
    parsed = {}
    status = run_command(prog, lambda: bool(parsed.setdefault("cfg", config(argv, prog))) and 0)
    if "cfg" not in parsed:
        raise SystemExit(status)
    return parsed["cfg"]


def _disk_full(err: BaseException, output_dir: object) -> str:
    """The results could not be written: why, and which results.json holds what was written before (when one
    does: a run that fails on its first pair has written none)."""
    why = write_failure(err)
    results = Path(str(output_dir)) / "results.json"
    kept = (f"the results written before are in {results}, unchanged" if results.is_file() else
            "no results were written")
    said = str(err).removeprefix(f"[Errno {getattr(err, 'errno', None)}] ")
    because = f" ({why})" if why else ""
    return (f"could not write the results to {output_dir}{because}: {said}; {kept}. Free space or pass another "
            "--output-dir, and run again")


def _pairs_failed(err: BaseException, output_dir: object) -> str:
    lines = [f"  {f['model']} on {f['dataset']}: {f['error']}" for f in getattr(err, "failures", [])]
    return f"{err}; the others' results are in {output_dir}/:\n" + "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Parse, check, run; exit status 1 when some (model, dataset) pair failed or results could not be written, 2
    for a bad option. `prog` is the command as the user typed it: messages and results.json name it."""
    from ..bench import PairsFailed, run
    from ._console import console_logging

    ran = {}

    def body() -> int:
        cfg = ran["cfg"] = config(argv, prog)
        with console_logging():
            run(cfg)
        return 0

    def output_dir() -> object:
        return ran["cfg"].output_dir if "cfg" in ran else "the output folder"

    return run_command(prog, body, {PairsFailed: lambda err: _pairs_failed(err, output_dir()),
                                    OSError: lambda err: _disk_full(err, output_dir())})
