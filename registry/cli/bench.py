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
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Optional, Sequence, Tuple

from .._files import unwritable
from .._options import add_dataclass_arguments, option
from ..bench.config import (
    DEFAULT_DATASETS,
    DEFAULT_MODELS,
    EMBEDDED_INPUT_SIZE,
    MIN_INPUT_SIDE,
    RunConfig,
    RunOptionError,
)
from ..evaluation.index import INDEX_KINDS

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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and a pointer to --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(run '{self.prog} --help' for every option)\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _int_list(text: str) -> Tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,5,10,20, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,5,10,20, got {text!r}")
    return values


def _names(text: str) -> Tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list with at least one entry")
    return values


WHAT, MODEL, RUN, RETRIEVAL, OUTPUTS = "what to evaluate", "model set-up", "how to run", "retrieval", "outputs"


@dataclass(frozen=True)
class RunOptions:
    """The runner's command-line options as given, one field per option: its default and its --help text (the
    parser is generated from these fields; parse_args checks them and derives the RunConfig)."""

    models: Tuple[str, ...] = option(_names(DEFAULT_MODELS), "comma-separated models (default {default}); see "
                                     "'models' below", group=WHAT, type=_names, metavar="LIST")
    untrained: bool = option(False, "build registry names fresh instead of loading their released weights: random or "
                             "--backbone-weights backbones, k-means centres (see --init); on the embedded data at "
                             f"{EMBEDDED_INPUT_SIZE[0]}x{EMBEDDED_INPUT_SIZE[1]} unless --input-size is given",
                             group=WHAT)
    datasets: Optional[Tuple[str, ...]] = option(None, "comma-separated datasets (default: the embedded "
                                                 f"{','.join(DEFAULT_DATASETS)})", group=WHAT, type=_names,
                                                 metavar="LIST")
    data_root: Optional[str] = option(None, "folder holding the datasets named by --datasets (default: the data "
                                      "embedded in the package, then $VPR_DATA)", group=WHAT, metavar="DIR")
    tolerance: Optional[int] = option(None, "aligned traversals: places within this many of the query's count as "
                                      "positives (default: the dataset's, Nordland 1)", group=WHAT,
                                      type=_non_negative, metavar="PLACES")
    pos_radius: float = option(25.0, "UTM datasets: database images within this distance are positives (default "
                               "{default})", group=WHAT, metavar="METRES")
    input_size: Optional[Tuple[int, int]] = option(None, "evaluate at this input size instead of the model's own "
                                                   "(480x640 for the VGG16 models); GFLOPs are counted at the "
                                                   "evaluated size", group=MODEL, type=_positive, nargs=2,
                                                   metavar=("H", "W"))
    backbone_weights: Optional[str] = option(None, "local backbone weights (.safetensors or .pth, torchvision names) "
                                             "for models built from the registry, e.g. "
                                             "path/to/vgg16.safetensors; without it those models "
                                             "have random backbones", group=MODEL, metavar="PATH")
    init: str = option("kmeans", "untrained NetVLAD/ClusVPR aggregators: 'kmeans' sets the centres by k-means of the "
                       "database's local descriptors with alpha initialisation (off-the-shelf, no training); 'none' "
                       "keeps the random centres (default {default})", group=MODEL, choices=("kmeans", "none"))
    kmeans_images: int = option(500, "database images sampled for k-means (default {default}, as NetVLAD's "
                                "initialisation)", group=MODEL, type=_positive, metavar="N")
    kmeans_per_image: int = option(100, "local descriptors sampled per image for k-means (default {default})",
                                   group=MODEL, type=_positive, metavar="N")
    whitening: str = option("fit", "a model whose PCA whitening is not fitted: 'fit' fits it on the database "
                            "descriptors when there are more database images than output dims (else it is reported "
                            "as 'none (too few images)'); 'none' never fits. A fitted whitening (pretrained models) "
                            "is always used (default {default})", group=MODEL, choices=("fit", "none"))
    device: str = option("auto", "'auto' (cuda when available, else cpu), cpu, cuda, cuda:N", group=RUN)
    batch_size: int = option(16, "extraction batch size (default {default})", group=RUN, type=_positive,
                             metavar="N")
    num_workers: Optional[int] = option(None, "image-loading worker processes (default 4 on CUDA, 0 on CPU)",
                                        group=RUN, type=_non_negative, metavar="N")
    amp: Optional[bool] = option(None, "bfloat16 autocast for extraction (default: on for CUDA, off for CPU)",
                                 group=RUN, action=argparse.BooleanOptionalAction)
    compile: bool = option(False, "extract with torch.compile(model), compiled on one batch before timing", group=RUN)
    runtime: Tuple[str, ...] = option(("torch",), "comma-separated CPU runtimes to run each model with, each one a row "
                                      "of the table: torch (eager PyTorch, what the releases were measured with), "
                                      "compile (torch.compile, channels_last), onnx (onnxruntime float32), onnx-int8 "
                                      "(onnxruntime, the backbone's convolutions int8, calibrated on "
                                      "--calibration-images database images); onnx and onnx-int8 need the 'onnx' "
                                      "extra (default {default})", group=RUN, type=_names, metavar="LIST")
    calibration_images: int = option(32, "onnx-int8: database images (evenly spaced) its activation ranges are "
                                     "calibrated on (default {default})", group=RUN, type=_positive, metavar="N")
    latency_repeats: int = option(5, "timed batch-1 forward passes for the per-image latency (median; default "
                                  "{default})", group=RUN, type=_positive, metavar="N")
    seed: int = option(0, "seed of random weights, sampling and k-means (default {default})", group=RUN)
    progress: bool = option(True, "show progress bars (default {default})", group=RUN,
                            action=argparse.BooleanOptionalAction)
    recall_ns: Tuple[int, ...] = option((1, 5, 10, 20), "N values of Recall@N (default {default})", group=RETRIEVAL,
                                        type=_int_list, metavar="LIST")
    index: str = option("flat", "faiss index: exact inner product ('flat'), IVF-PQ, HNSW, or exact search on "
                        "PCA-reduced descriptors ('pca'); any other than flat also reports its loss against exact "
                        "search. benchmarks/RESULTS.md 'Cost as the map grows' says which for which map size "
                        "(default {default})", group=RETRIEVAL, choices=INDEX_KINDS)
    # the index parameters' defaults are registry.evaluation.IndexSpec's (tests/test_cli_options.py checks it)
    pca_dim: Optional[int] = option(None, "'pca': dims kept (default 256), taken as --pca-from says; with ivfpq or "
                                    "hnsw, project to D dims first", group=RETRIEVAL, type=_positive,
                                    metavar="D")
    pca_from: str = option("auto", "where the PCA step of --index pca (or --pca-dim) comes from: 'whitening' keeps "
                           "the D leading components of the model's fitted whitening (as descriptor_dim=D does), "
                           "'database' fits a PCA on the database descriptors, 'auto' the whitening when the model "
                           "has one of >= D components, else the database (default {default})", group=RETRIEVAL,
                           choices=("auto", "whitening", "database"))
    ivf_nlist: Optional[int] = option(None, "IVF-PQ: inverted lists (default 4*sqrt(database size))",
                                      group=RETRIEVAL, type=_positive, metavar="N")
    pq_m: Optional[int] = option(None, "IVF-PQ: sub-quantisers, must divide the descriptor dim (default: the largest "
                                 "divisor <= 64)", group=RETRIEVAL, type=_positive, metavar="M")
    pq_nbits: int = option(8, "IVF-PQ: bits per code (default {default})", group=RETRIEVAL, type=_positive,
                           metavar="B")
    nprobe: int = option(16, "IVF-PQ: lists searched (default {default})", group=RETRIEVAL, type=_positive,
                         metavar="N")
    hnsw_m: int = option(32, "HNSW: links per node (default {default})", group=RETRIEVAL, type=_positive, metavar="M")
    ef_construction: int = option(40, "HNSW: beam width while building (default {default})", group=RETRIEVAL,
                                  type=_positive, metavar="EF")
    ef_search: int = option(64, "HNSW: beam width while searching; higher is slower and closer to exact (default "
                            "{default})", group=RETRIEVAL, type=_positive, metavar="EF")
    rerank: bool = option(False, "re-rank each query's exact top-k shortlist by k-reciprocal encoding (Zhong et al. "
                          "2017); the recall before re-ranking is kept in results.json", group=RETRIEVAL)
    rerank_k1: int = option(20, "re-ranking k1 (default {default})", group=RETRIEVAL, type=_positive, metavar="K")
    rerank_k2: int = option(6, "re-ranking k2 (default {default})", group=RETRIEVAL, type=_positive, metavar="K")
    rerank_lambda: float = option(0.3, "re-ranking weight of the original distance, 0..1 (default {default})",
                                  group=RETRIEVAL, metavar="L")
    output_dir: Optional[str] = option(None, "where results go (default results/<timestamp>)", group=OUTPUTS,
                                       metavar="DIR")
    save_descriptors: bool = option(False, "also write each model's query and database descriptors "
                                    "(descriptors/*.npz)", group=OUTPUTS)
    store: Optional[str] = option(None, "stream descriptors in chunks to resumable on-disk stores "
                                  "DIR/<model>__<dataset>/{queries,database} (memory-mapped .npy): a killed run "
                                  "resumes there, and a store made by another model or input size is refused",
                                  group=OUTPUTS, metavar="DIR")
    num_preds_to_save: int = option(0, "save prediction grids for N queries per model and dataset: each row the query "
                                    "and its top-k, green border for a correct match, red otherwise (default "
                                    "{default})", group=OUTPUTS, type=_non_negative, metavar="N")
    top_k: int = option(5, "predictions per grid row (default {default})", group=OUTPUTS, type=_positive,
                        metavar="K")
    save_attention: int = option(0, "for N queries, save heat maps of where each model looks overlaid on the image "
                                 "(ClusVPR: CWT cluster weights and OptLAD group attention; NetVLAD: assignment "
                                 "confidence; GeM: activation energy) (default {default})", group=OUTPUTS,
                                 type=_non_negative, metavar="N")


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
    from ..runtimes.base import RUNTIMES

    unknown = [r for r in a.runtime if r not in RUNTIMES]
    if unknown:
        parser.error(f"--runtime {','.join(unknown)}: unknown; choose from {', '.join(RUNTIMES)}")
    if len(set(a.runtime)) != len(a.runtime):
        parser.error(f"--runtime lists a runtime twice: {','.join(a.runtime)}")
    if a.compile and a.runtime != ("torch",):
        parser.error("--compile compiles the eager model; with --runtime use --runtime compile instead")
    if a.input_size is not None and min(a.input_size) < MIN_INPUT_SIDE:
        parser.error(f"--input-size {a.input_size[0]} {a.input_size[1]}: both sides must be >= {MIN_INPUT_SIDE}")
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
    problem = unwritable(Path(a.output_dir or "results").expanduser())
    if problem:
        parser.error(f"--output-dir {a.output_dir or 'results/'} cannot be written: {problem}; pass --output-dir "
                     "with a folder you can write to")


def parse_args(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> RunConfig:
    """Parse and validate the command line (exit status 2 and a one-line reason on bad input)."""
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = RunOptions(**vars(parser.parse_args(argv)))
    _check(parser, a)
    device = _device(parser, a.device)
    on_cuda = device.startswith("cuda")
    if on_cuda and a.runtime != ("torch",):
        parser.error(f"--runtime {','.join(a.runtime)} runs on the CPU: add --device cpu, or on a GPU use the default "
                     "runtime (torch) with --compile / --amp")
    index_options = _index_options(a)
    embedded = a.datasets is None
    input_size = tuple(a.input_size) if a.input_size else (EMBEDDED_INPUT_SIZE if embedded and a.untrained else None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return RunConfig(
        models=a.models, datasets=DEFAULT_DATASETS if embedded else a.datasets, embedded_default=embedded,
        untrained=a.untrained,
        data_root=a.data_root, tolerance=a.tolerance, pos_radius=a.pos_radius, input_size=input_size,
        batch_size=a.batch_size, device=device, num_workers=a.num_workers if a.num_workers is not None else
        (4 if on_cuda else 0), recall_ns=a.recall_ns, index=a.index, index_options=index_options,
        rerank=(a.rerank_k1, a.rerank_k2, a.rerank_lambda) if a.rerank else None,
        backbone_weights=str(Path(a.backbone_weights).expanduser()) if a.backbone_weights else None,
        init=a.init, kmeans_images=a.kmeans_images, kmeans_per_image=a.kmeans_per_image, whitening=a.whitening,
        save_descriptors=a.save_descriptors, num_preds_to_save=a.num_preds_to_save, top_k=a.top_k,
        save_attention=a.save_attention, output_dir=Path(a.output_dir or os.path.join("results", stamp)),
        seed=a.seed, amp=a.amp, compile=a.compile, latency_repeats=a.latency_repeats, progress=a.progress,
        argv=tuple(argv), prog=prog, store=Path(a.store).expanduser() if a.store else None,
        pca_from=a.pca_from, runtimes=a.runtime, calibration_images=a.calibration_images,
    )


def _index_options(a: RunOptions) -> Tuple[Tuple[str, int], ...]:
    """The options of the chosen index (registry.evaluation.IndexSpec fields) that were given or have defaults."""
    options = {"flat": (), "pca": (("pca_dim", a.pca_dim),),
               "ivfpq": (("nlist", a.ivf_nlist), ("m", a.pq_m), ("nbits", a.pq_nbits), ("nprobe", a.nprobe),
                         ("pca_dim", a.pca_dim)),
               "hnsw": (("hnsw_m", a.hnsw_m), ("ef_construction", a.ef_construction), ("ef_search", a.ef_search),
                        ("pca_dim", a.pca_dim))}[a.index]
    return tuple((k, v) for k, v in options if v is not None)


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

