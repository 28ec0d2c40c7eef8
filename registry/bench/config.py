"""The runner's options, declared once (RunOptions: one field per option, its default and its --help text), and
what one run needs (RunConfig: the options with their machine- and data-dependent defaults resolved). The command
line (`vpr bench`, registry.cli.bench) generates its parser from RunOptions; Python callers build
`RunConfig.from_options(RunOptions(...))`, which checks every option first (UsageError naming it)."""
from __future__ import annotations

import sys
import time
from argparse import ArgumentTypeError, BooleanOptionalAction
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NoReturn, Optional, Sequence, Tuple

from .._util.files import unwritable
from .._util.options import (
    UsageError,
    calibration_images_option,
    check_data_root,
    check_input_size,
    comma_list,
    data_root_option,
    device_option,
    input_size_option,
    option,
    positive_int,
    resolve_device,
)
from .._util.ranges import BUILDER_RANGES, ArgRange
from ..evaluation.index import AUTO, INDEX_KINDS, REFINE_FROM, IndexSpec, parse_bytes
from ..quantize import DEFAULT_CALIBRATION_IMAGES

DEFAULT_MODELS = "clusvpr,netvlad,gem"
DEFAULT_DATASETS = ("corridor", "nordland_test")  # both embedded in the package
# untrained models on the embedded data: the Corridor's own resolution (160x120) keeps the run a few minutes
EMBEDDED_INPUT_SIZE = (120, 160)
MIN_INPUT_SIDE = 16  # one conv5 cell at stride 16; each model checks its own (registry.models.factory.min_input_side)
INPUT_SIDES = ArgRange(MIN_INPUT_SIDE, BUILDER_RANGES["input_size"].hi, length=2)  # --input-size of the run


class RunOptionError(UsageError):
    """An option of the run that turned out unusable once the run started (the message names it and the fix)."""


def log(message: str) -> None:
    """The runner's progress messages go to stderr, so stdout carries only the Markdown table (the runner is run
    by the command line; library code below it logs through `logging` instead)."""
    print(message, file=sys.stderr, flush=True)


def _bytes(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise ArgumentTypeError(str(err)) from None


_positive = positive_int


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _int_list(text: str) -> Tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise ArgumentTypeError(f"expected comma-separated integers such as 1,5,10,20, got {text!r}") from None
    if not values or values[0] < 1:
        raise ArgumentTypeError(f"expected positive integers such as 1,5,10,20, got {text!r}")
    return values


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _check_index(a: "RunOptions") -> None:
    if a.memory_budget is not None and a.index != "auto":
        raise UsageError(f"--memory-budget applies to --index auto, not --index {a.index}")
    if (a.refine is not None or a.opq) and a.index not in ("ivfpq", "hnsw", "pca"):
        raise UsageError(f"--refine / --opq do not apply to --index {a.index} (refine: ivfpq, hnsw, pca; opq: ivfpq)")
    if a.opq and a.index != "ivfpq":
        raise UsageError(f"--opq rotates before product quantisation: it applies to --index ivfpq, not {a.index}")
    _check_index_ranges(a)


# the flag of each IndexSpec field the chosen index uses, so a value out of IndexSpec's range is refused at the start
_SPEC_FLAGS = {"ivfpq": {"nlist": "ivf_nlist", "m": "pq_m", "nbits": "pq_nbits", "nprobe": "nprobe"},
               "hnsw": {"hnsw_m": "hnsw_m", "ef_construction": "ef_construction", "ef_search": "ef_search"}}


def _check_index_ranges(a: "RunOptions") -> None:
    flags = _SPEC_FLAGS.get(a.index, {})
    for field, name in flags.items():
        try:
            IndexSpec(a.index, **{field: getattr(a, name)})
        except ValueError as err:
            raise UsageError(f"--{name.replace('_', '-')}: {err}") from None


def _check_folders(a: "RunOptions") -> None:
    if a.backbone_weights is not None and not Path(a.backbone_weights).expanduser().is_file():
        raise UsageError(f"--backbone-weights: file not found: {a.backbone_weights}")
    check_data_root(a.data_root)
    if a.output_dir is not None and Path(a.output_dir).exists() and not Path(a.output_dir).is_dir():
        raise UsageError(f"--output-dir: {a.output_dir} exists and is not a folder")
    problem = unwritable(Path(a.output_dir or "results").expanduser())
    if problem:
        raise UsageError(f"--output-dir {a.output_dir or 'results/'} cannot be written: {problem}; pass --output-dir "
                         "with a folder you can write to")
    store = Path(a.store).expanduser() if a.store is not None else None
    if store is not None and store.exists() and not store.is_dir():
        raise UsageError(f"--store: {a.store} exists and is not a folder")
    problem = unwritable(store) if store is not None else None
    if problem:
        raise UsageError(f"--store {a.store} cannot be written: {problem}; pass --store with a folder you can write to")


def _input_sides(models: Sequence[str]) -> ArgRange:
    """--input-size's range for `models`: from the largest smallest side among the registered names there (a folder
    or Hub repository is checked when it is loaded)."""
    from ..models.factory import min_input_side

    sides = [MIN_INPUT_SIDE]
    for name in models:
        try:
            sides.append(min_input_side(name))
        except (KeyError, ValueError):
            continue
    return ArgRange(max(sides), INPUT_SIDES.hi, length=2)


def check_options(a: "RunOptions") -> str:
    """UsageError naming the first option of `a` that cannot work (the message says the fix); the device it names
    (resolved)."""
    from ..runtimes.base import runtime_list_problem

    problem = runtime_list_problem(a.runtime)
    if problem:
        raise UsageError(f"--runtime {problem}")
    if a.compile and a.runtime != ("torch",):
        raise UsageError("--compile compiles the eager model; with --runtime use --runtime compile instead")
    check_input_size(a.input_size, _input_sides(a.models), "the benchmarked models")
    if not 0.0 <= a.rerank_lambda <= 1.0:
        raise UsageError(f"--rerank-lambda must be within 0..1, got {a.rerank_lambda}")
    if a.pos_radius <= 0:
        raise UsageError(f"--pos-radius must be > 0 metres, got {a.pos_radius}")
    _check_folders(a)
    _check_index(a)
    device = resolve_device(a.device)
    if device.startswith("cuda") and a.runtime != ("torch",):
        raise UsageError(f"--runtime {','.join(a.runtime)} runs on the CPU: add --device cpu, or on a GPU use the "
                         "default runtime (torch) with --compile / --amp")
    return device


WHAT, MODEL, RUN, RETRIEVAL, OUTPUTS = "what to evaluate", "model set-up", "how to run", "retrieval", "outputs"


@dataclass(frozen=True)
class RunOptions:
    """The runner's command-line options as given, one field per option: its default and its --help text (the
    parser is generated from these fields; RunConfig.from_options checks them and derives the RunConfig)."""

    models: Tuple[str, ...] = option(comma_list(DEFAULT_MODELS), "comma-separated models (default {default}); see "
                                     "'models' below", group=WHAT, type=comma_list, metavar="LIST")
    untrained: bool = option(False, "build registry names fresh instead of loading their released weights: random or "
                             "--backbone-weights backbones, k-means centres (see --init); on the embedded data at "
                             f"{EMBEDDED_INPUT_SIZE[0]}x{EMBEDDED_INPUT_SIZE[1]} unless --input-size is given",
                             group=WHAT)
    datasets: Optional[Tuple[str, ...]] = option(None, "comma-separated datasets (default: the embedded "
                                                 f"{','.join(DEFAULT_DATASETS)})", group=WHAT, type=comma_list,
                                                 metavar="LIST")
    data_root: Optional[str] = data_root_option("folder holding the datasets named by --datasets (default: the data "
                                                "embedded in the package, then $VPR_DATA)", group=WHAT)
    tolerance: Optional[int] = option(None, "aligned traversals: places within this many of the query's count as "
                                      "positives (default: the dataset's, Nordland 1)", group=WHAT,
                                      type=_non_negative, metavar="PLACES")
    pos_radius: float = option(25.0, "UTM datasets: database images within this distance are positives (default "
                               "{default})", group=WHAT, metavar="METRES")
    input_size: Optional[Tuple[int, int]] = input_size_option("evaluate at this input size instead of the model's "
                                                              "own (480x640 for the VGG16 models); GFLOPs are "
                                                              "counted at the evaluated size", group=MODEL)
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
    device: str = device_option("'auto' (cuda when available, else cpu), cpu, cuda, cuda:N", group=RUN)
    batch_size: int = option(16, "extraction batch size (default {default})", group=RUN, type=_positive,
                             metavar="N")
    num_workers: Optional[int] = option(None, "image-loading worker processes (default 4 on CUDA, 0 on CPU)",
                                        group=RUN, type=_non_negative, metavar="N")
    amp: Optional[bool] = option(None, "bfloat16 autocast for extraction (default: on for CUDA, off for CPU)",
                                 group=RUN, action=BooleanOptionalAction)
    compile: bool = option(False, "extract with torch.compile(model), compiled on one batch before timing", group=RUN)
    runtime: Tuple[str, ...] = option(("torch",), "comma-separated CPU runtimes to run each model with, each one a row "
                                      "of the table: torch (eager PyTorch, what the releases were measured with), "
                                      "compile (torch.compile, channels_last), onnx (onnxruntime float32), onnx-int8 "
                                      "(onnxruntime, the backbone's convolutions int8, calibrated on "
                                      "--calibration-images database images); onnx and onnx-int8 need the 'onnx' "
                                      "extra (default {default})", group=RUN, type=comma_list, metavar="LIST")
    calibration_images: int = calibration_images_option(DEFAULT_CALIBRATION_IMAGES, "onnx-int8: database images "
                                                        "(evenly spaced) its activation ranges are calibrated on "
                                                        "(default {default})", group=RUN)
    latency_repeats: int = option(5, "timed batch-1 forward passes for the per-image latency (median; default "
                                  "{default})", group=RUN, type=_positive, metavar="N")
    seed: int = option(0, "seed of random weights, sampling and k-means (default {default})", group=RUN)
    progress: bool = option(True, "show progress bars (default {default})", group=RUN,
                            action=BooleanOptionalAction)
    recall_ns: Tuple[int, ...] = option((1, 5, 10, 20), "N values of Recall@N (default {default})", group=RETRIEVAL,
                                        type=_int_list, metavar="LIST")
    sequence: Tuple[int, ...] = option((), "also score sequences of these lengths L (frames, comma-separated, e.g. "
                                       "5,10,20; SeqSLAM-style over exact distances) on datasets whose queries follow "
                                       "a route in order (aligned traversals, the Corridor)", group=RETRIEVAL,
                                       type=_int_list, metavar="LIST")
    index: str = option("flat", "faiss index: exact inner product ('flat'), IVF-PQ, HNSW, exact search on "
                        "PCA-reduced descriptors ('pca'), or 'auto': the one the measured map-size curve (README, "
                        "'Large maps') says keeps recall for the database size, dimension and --memory-budget (the "
                        "choice is printed and "
                        "recorded in results.json); any other than flat also reports its loss against exact search "
                        "(default {default})", group=RETRIEVAL, choices=INDEX_KINDS + (AUTO,))
    memory_budget: Optional[int] = option(None, "--index auto: RAM the index may use, e.g. 8GB or 512MiB (default: "
                                          "no limit)", group=RETRIEVAL, type=_bytes, metavar="SIZE")
    refine: Optional[int] = option(None, "ivfpq / hnsw / pca: re-rank a shortlist of k*R candidates with exact "
                                   "similarities, read from a float16 copy on disk (--refine-from) (default: none)",
                                   group=RETRIEVAL, type=_positive, metavar="R")
    refine_from: str = option("disk", "where --refine reads full-precision vectors: 'disk' (a float16 copy beside "
                              "the index, RAM holds only the codes), 'fp16' or 'sq8' (an in-memory copy, faiss "
                              "IndexRefine) (default {default})", group=RETRIEVAL, choices=REFINE_FROM)
    opq: bool = option(False, "IVF-PQ: learn an OPQ rotation before product quantisation", group=RETRIEVAL)
    # the index parameters' defaults are registry.evaluation.IndexSpec's
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
    output_dir: Optional[Path] = option(None, "where results go (default results/<timestamp>)", group=OUTPUTS,
                                        type=_path, metavar="DIR")
    save_descriptors: bool = option(False, "also write each model's query and database descriptors "
                                    "(descriptors/*.npz)", group=OUTPUTS)
    store: Optional[Path] = option(None, "write descriptors chunk by chunk to map stores (Lance datasets; pip install "
                                  "'clusvpr-zoo[map]') DIR/<model>__<dataset>/{queries,database}: a killed run "
                                  "resumes there, and a store made by another model or input size is refused",
                                   group=OUTPUTS, type=_path, metavar="DIR")
    num_preds_to_save: int = option(0, "save prediction grids for N queries per model and dataset: each row the query "
                                    "and its top-k, green border for a correct match, red otherwise (default "
                                    "{default})", group=OUTPUTS, type=_non_negative, metavar="N")
    top_k: int = option(5, "predictions per grid row (default {default})", group=OUTPUTS, type=_positive,
                        metavar="K")
    save_attention: int = option(0, "for N queries, save heat maps of where each model looks overlaid on the image "
                                 "(ClusVPR: CWT cluster weights and OptLAD group attention; NetVLAD: assignment "
                                 "confidence; GeM: activation energy) (default {default})", group=OUTPUTS,
                                 type=_non_negative, metavar="N")



@dataclass(frozen=True)
class RunConfig(RunOptions):
    """Everything one run needs: the options (RunOptions' fields, each declared once there) with every default that
    depends on the machine or the data resolved (`from_options`), and how the run was started."""

    embedded_default: bool = False  # --datasets not given: the embedded data
    argv: Tuple[str, ...] = ()
    prog: str = "vpr bench"

    @classmethod
    def from_options(cls, options: RunOptions, argv: Sequence[str] = (), prog: str = "vpr bench") -> "RunConfig":
        """Resolve the 'auto' / None defaults: device (cuda when available), workers (4 on CUDA, 0 on CPU), the
        embedded datasets, the untrained input size on them, results/<timestamp>, expanded paths. An option that
        cannot work raises UsageError first (`check_options`), for the command line and Python callers alike."""
        device = check_options(options)
        values = {f.name: getattr(options, f.name) for f in fields(RunOptions)}
        embedded = values["datasets"] is None
        input_size = values["input_size"]
        values.update(
            device=device,
            num_workers=values["num_workers"] if values["num_workers"] is not None else
            (4 if device.startswith("cuda") else 0),
            datasets=DEFAULT_DATASETS if embedded else tuple(values["datasets"]),
            input_size=tuple(input_size) if input_size else (EMBEDDED_INPUT_SIZE if embedded and values["untrained"]
                                                             else None),
            output_dir=Path(values["output_dir"] or Path("results") / time.strftime("%Y%m%d-%H%M%S")),
            store=Path(values["store"]).expanduser() if values["store"] else None,
            backbone_weights=str(Path(values["backbone_weights"]).expanduser()) if values["backbone_weights"]
            else None,
        )
        return cls(**values, embedded_default=embedded, argv=tuple(argv), prog=prog)

    @property
    def command(self) -> str:
        """The command this run was started with, without its arguments (for results.json): the name the user
        typed, as the command line passed it (`prog`)."""
        return self.prog

    @property
    def index_options(self) -> Tuple[Tuple[str, int], ...]:
        """The options of the chosen index (registry.evaluation.IndexSpec fields) that were given or have defaults."""
        refine = (("refine", self.refine), ("refine_from", self.refine_from if self.refine else None))
        options = {"flat": (), "pca": (("pca_dim", self.pca_dim), *refine),
                   "ivfpq": (("nlist", self.ivf_nlist), ("m", self.pq_m), ("nbits", self.pq_nbits),
                             ("nprobe", self.nprobe), ("pca_dim", self.pca_dim), ("opq", self.opq or None), *refine),
                   "hnsw": (("hnsw_m", self.hnsw_m), ("ef_construction", self.ef_construction),
                            ("ef_search", self.ef_search), ("pca_dim", self.pca_dim), *refine),
                   AUTO: (("memory_budget", self.memory_budget),)}[self.index]
        return tuple((k, v) for k, v in options if v is not None)

    @property
    def rerank_params(self) -> Optional[Tuple[int, int, float]]:
        """(k1, k2, lambda) of k-reciprocal re-ranking, None without --rerank."""
        return (self.rerank_k1, self.rerank_k2, self.rerank_lambda) if self.rerank else None

    def fail(self, message: str) -> NoReturn:
        """A problem with the options found once the run started (a model that cannot load, a duplicate): raised
        as a RunOptionError, which the command line reports like a bad argument (status 2)."""
        raise RunOptionError(message)
