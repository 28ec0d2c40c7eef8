"""`vpr bench`: compare VPR models on real datasets. Options are RunOptions fields, checked up front into one
immutable registry.bench.RunConfig (bad input fails fast, exit status 2); `main` runs registry.bench.run.

    vpr bench                    # the released clusvpr, netvlad, gem on the embedded Corridor + Nordland test
    vpr bench --untrained --backbone-weights path/to/vgg16.safetensors
    vpr bench --models clusvpr,org/name@<commit>,./my_dir --datasets pitts30k_test --data-root /data

`python benchmarks/run.py` in a clone of the repository is the same command.
"""
from __future__ import annotations

import argparse
import errno
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from .._files import unwritable
from .._options import add_dataclass_arguments
from .._ranges import BUILDER_RANGES
from ..bench.config import MIN_INPUT_SIDE, RunConfig, RunOptionError, RunOptions

PROG = "vpr bench"
MAX_INPUT_SIDE = int(BUILDER_RANGES["input_size"].hi)

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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and a pointer to --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(run '{self.prog} --help' for every option)\n")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The runner's argument parser, generated from RunOptions (every option documented in --help)."""
    p = _Parser(prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(p, RunOptions)
    return p


def _device(parser: argparse.ArgumentParser, text: str) -> str:
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except RuntimeError:
        parser.error(f"--device: {text!r} is not a device; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {text}: CUDA is not available on this machine; use --device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        parser.error(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type not in ("cpu", "cuda"):
        parser.error(f"--device {text}: only cpu and cuda are supported")
    return str(dev)


def _check(parser: argparse.ArgumentParser, a: RunOptions) -> None:
    from ..runtimes.base import runtime_list_problem

    problem = runtime_list_problem(a.runtime)
    if problem:
        parser.error(f"--runtime {problem}")
    if a.compile and a.runtime != ("torch",):
        parser.error("--compile compiles the eager model; with --runtime use --runtime compile instead")
    if a.input_size is not None and not all(MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE for side in a.input_size):
        parser.error(f"--input-size {a.input_size[0]} {a.input_size[1]}: both sides must be >= {MIN_INPUT_SIDE} "
                     f"and <= {MAX_INPUT_SIDE} (valid: {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE})")
    if a.backbone_weights is not None and not Path(a.backbone_weights).expanduser().is_file():
        parser.error(f"--backbone-weights: file not found: {a.backbone_weights}")
    if a.data_root is not None and not Path(a.data_root).expanduser().is_dir():
        parser.error(f"--data-root: folder not found: {a.data_root}")
    if not 0.0 <= a.rerank_lambda <= 1.0:
        parser.error(f"--rerank-lambda must be within 0..1, got {a.rerank_lambda}")
    if a.pos_radius <= 0:
        parser.error(f"--pos-radius must be > 0 metres, got {a.pos_radius}")
    if a.output_dir is not None and Path(a.output_dir).exists() and not Path(a.output_dir).is_dir():
        parser.error(f"--output-dir: {a.output_dir} exists and is not a folder")
    if a.memory_budget is not None and a.index != "auto":
        parser.error(f"--memory-budget applies to --index auto, not --index {a.index}")
    if (a.refine is not None or a.opq) and a.index not in ("ivfpq", "hnsw", "pca"):
        parser.error(f"--refine / --opq do not apply to --index {a.index} (refine: ivfpq, hnsw, pca; opq: ivfpq)")
    if a.opq and a.index != "ivfpq":
        parser.error(f"--opq rotates before product quantisation: it applies to --index ivfpq, not {a.index}")
    problem = unwritable(Path(a.output_dir or "results").expanduser())
    if problem:
        parser.error(f"--output-dir {a.output_dir or 'results/'} cannot be written: {problem}; pass --output-dir "
                     "with a folder you can write to")
    if a.store is not None and Path(a.store).expanduser().exists() and not Path(a.store).expanduser().is_dir():
        parser.error(f"--store: {a.store} exists and is not a folder")
    problem = unwritable(Path(a.store).expanduser()) if a.store is not None else None
    if problem:
        parser.error(f"--store {a.store} cannot be written: {problem}; pass --store with a folder you can write to")


def parse_args(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> RunConfig:
    """Parse and validate the command line (exit status 2 and a one-line reason on bad input)."""
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = RunOptions(**vars(parser.parse_args(argv)))
    _check(parser, a)
    device = _device(parser, a.device)
    if device.startswith("cuda") and a.runtime != ("torch",):
        parser.error(f"--runtime {','.join(a.runtime)} runs on the CPU: add --device cpu, or on a GPU use the default "
                     "runtime (torch) with --compile / --amp")
    return RunConfig.from_options(replace(a, device=device), argv, prog)


def fail(message: str, prog: str = PROG) -> NoReturn:
    """Exit like argparse does for a bad argument found after parsing (status 2)."""
    build_parser(prog).error(message)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Parse, check, run; exit status 1 when some (model, dataset) pair failed or results could not be written, 2
    for a bad option. `prog` is the command as the user typed it: messages and results.json name it."""
    from ._console import console_logging

    cfg = parse_args(argv, prog)
    with console_logging():
        return _main(cfg)


def _main(cfg: RunConfig) -> int:
    from ..bench import PairsFailed, run

    try:
        run(cfg)
    except RunOptionError as err:
        fail(str(err), cfg.prog)
    except PairsFailed as err:
        lines = [f"  {f['model']} on {f['dataset']}: {f['error']}" for f in err.failures]
        print(f"{cfg.prog}: error: {err}; the others' results are in {cfg.output_dir}/:\n" + "\n".join(lines),
              file=sys.stderr)
        return 1
    except OSError as err:
        full = " (the disk is full)" if err.errno == errno.ENOSPC else ""
        print(f"{cfg.prog}: error: could not write the results to {cfg.output_dir}{full}: {err}; what was written "
              "before is in results.json there. Free space or pass another --output-dir, and run again",
              file=sys.stderr)
        return 1
    return 0

