"""What one benchmark run needs, validated (RunConfig), and the runner's defaults; the command line
(`vpr bench`, registry.cli.bench) parses its options into it, Python callers build it directly."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Optional, Tuple

DEFAULT_MODELS = "clusvpr,netvlad,gem"
DEFAULT_DATASETS = ("corridor", "nordland_test")  # both embedded in the package
# untrained models on the embedded data: the Corridor's own resolution (160x120) keeps the run a few minutes
EMBEDDED_INPUT_SIZE = (120, 160)
MIN_INPUT_SIDE = 32  # two conv5 cells at stride 16 (ClusVPR's CWT needs a 2x2 map)


class RunOptionError(ValueError):
    """An option of the run that turned out unusable once the run started (the message names it and the fix)."""


def log(message: str) -> None:
    """The runner's progress messages go to stderr, so stdout carries only the Markdown table (the runner is run
    by the command line; library code below it logs through `logging` instead)."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, validated."""

    models: Tuple[str, ...]
    datasets: Tuple[str, ...]
    embedded_default: bool
    untrained: bool
    data_root: Optional[str]
    tolerance: Optional[int]
    pos_radius: float
    input_size: Optional[Tuple[int, int]]
    batch_size: int
    device: str
    num_workers: int
    recall_ns: Tuple[int, ...]
    index: str
    index_options: Tuple[Tuple[str, int], ...]
    rerank: Optional[Tuple[int, int, float]]
    backbone_weights: Optional[str]
    init: str
    kmeans_images: int
    kmeans_per_image: int
    whitening: str
    save_descriptors: bool
    num_preds_to_save: int
    top_k: int
    save_attention: int
    output_dir: Path
    seed: int
    amp: Optional[bool]
    compile: bool
    latency_repeats: int
    progress: bool
    argv: Tuple[str, ...]
    prog: str = "vpr bench"
    store: Optional[Path] = None
    pca_from: str = "auto"
    runtimes: Tuple[str, ...] = ("torch",)  # registry.RUNTIMES; each model runs with each, one record per runtime
    calibration_images: int = 32  # onnx-int8: database images its activation ranges are calibrated on

    @property
    def command(self) -> str:
        """The command this run was started with, without its arguments (for results.json): the name the user
        typed, as the command line passed it (`prog`)."""
        return self.prog

    def fail(self, message: str) -> NoReturn:
        """A problem with the options found once the run started (a model that cannot load, a duplicate): raised
        as a RunOptionError, which the command line reports like a bad argument (status 2)."""
        raise RunOptionError(message)
