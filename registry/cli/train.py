"""`vpr train`: train any registry model (ClusVPR, NetVLAD, GeM, plugins) with one recipe and budget; see --help.

    vpr train --model clusvpr --backbone-weights path/to/vgg16.safetensors \\
        --input-size 96 192 --cache-features --model-arg whitening_dim=1024 --output runs/clusvpr
    torchrun --nproc_per_node=4 -m registry.cli train --model netvlad ...    # DDP, one process per GPU
    vpr train ... --resume                                                     # continue a killed run

The output folder is a Hub layout once training ends: registry.create(name, pretrained=DIR) and
`vpr bench --models DIR` load it; DIR/train/ holds checkpoints and log.jsonl.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .._util import options as opt
from .._util.files import unwritable
from .._util.options import UsageError, add_dataclass_arguments, comma_list, field_default, option, option_fields
from ..quantize import DEFAULT_CALIBRATION_IMAGES
from ..training.config import CLUSTERS, DATA, MODEL, RECIPE_GENERATIONS, RUN, SCHEDULE, TrainConfig
from ._command import parser, run_command

PROG = "vpr train"
EPILOG = """\
Distances: positives lie within --pos-radius and negatives beyond --neg-radius, in the dataset's unit:
metres on UTM datasets (defaults 10 / 25), places on aligned traversals such as Nordland (defaults: the
tolerance, 1, and 2.5 x the tolerance, so negatives are at least 3 places away).
Budget: one epoch = --queries-per-epoch tuples (default: every training query); ClusVPR's pyramid
recipe runs --generations generations of --epochs epochs (--gen0-epochs for the first).
Caching (--cache-features): the frozen backbone layers (VGG16 conv1..conv4) run once per image and are
stored; epochs then run conv5 + aggregator only. Cached training has no colour jitter.
"""


def _pair(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


_RERANK = (field_default(TrainConfig, "rerank_k1"), field_default(TrainConfig, "rerank_k2"),
           field_default(TrainConfig, "rerank_lambda"))


@dataclass
class TrainCommand:
    """The trainer's command-line options that are not TrainConfig fields (what to train on which data, where the
    run goes), declared once: default and --help text. The parser also gets TrainConfig's own options."""

    model: Optional[str] = option(None, "registry name or alias (clusvpr, netvlad, gem, ...)", group=MODEL,
                                  required=True)
    model_arg: List[Tuple[str, Any]] = option(help="registry override, JSON value (e.g. whitening_dim=1024, "
                                              "num_clusters=32, whitening_dim=null)", default_factory=list,
                                              group=MODEL, type=_pair, action="append", metavar="KEY=VALUE")
    input_size: Optional[Tuple[int, int]] = opt.input_size_option("training and test input size (within the model's "
                                                              "range)", group=MODEL)
    backbone_weights: Optional[str] = option(None, "local backbone weights file (.safetensors/.pth) or 'imagenet'",
                                             group=MODEL)
    train_layers: Optional[str] = option(None, "trainable backbone layers: conv5 (VGG16, default) | layer3 "
                                         "(ResNet-50) | all | none", group=MODEL)
    pretrained: Optional[str] = option(None, "start from trained weights: a Hub-layout folder or org/name[@rev]",
                                       group=MODEL)
    plugin: List[str] = option(help="import MODULE first (a plugin registering models or recipes); repeatable",
                               default_factory=list, group=MODEL, action="append", metavar="MODULE")
    train_set: str = option("nordland_train", "training dataset: known name, folder or layout:path (default "
                            "{default} = places 1..1600)", group=DATA)
    cities: Tuple[str, ...] = option((), "GSV-Cities: comma-separated cities to train on (default: every "
                                     "Dataframes/<city>.csv)", group=DATA, type=comma_list, metavar="LIST")
    val_set: str = option("nordland_val", "validation dataset, or 'none' (default {default})", group=DATA)
    test_set: List[str] = option(help="evaluate the final model on this dataset (from images); repeatable",
                                 default_factory=list, group=DATA, action="append", metavar="SPEC")
    runtime: Tuple[str, ...] = option(("torch",), "comma-separated CPU runtimes the final evaluation (validation and "
                                      "each --test-set) also runs the trained model with: compile, onnx, onnx-int8 "
                                      "(int8 calibrated on --calibration-images training images); torch, eager "
                                      "PyTorch, always runs: config.json records its recalls; summary.json's "
                                      "'runtimes' the others (default {default})", group=DATA, type=comma_list,
                                      metavar="LIST")
    calibration_images: int = opt.calibration_images_option(DEFAULT_CALIBRATION_IMAGES, "onnx-int8: training database "
                                                        "images (evenly spaced) its activation ranges are calibrated "
                                                        "on (default {default})", group=DATA)
    data_root: Optional[str] = opt.data_root_option("folder that holds the known datasets", group=DATA)
    tolerance: Optional[int] = option(None, "aligned traversals: places that count as the same place", group=DATA)
    generations: Optional[int] = option(None, f"generations (default: {RECIPE_GENERATIONS} with a recipe that has "
                                        "generations, ClusVPR's pyramid, on tuples; 1 with the global recipe or "
                                        "--batching places)", group=SCHEDULE)
    rerank: Tuple[float, float, float] = option(_RERANK, "k-reciprocal re-ranking for difficult positives (default "
                                                "{default})", group=SCHEDULE, type=float, nargs=3,
                                                metavar=("K1", "K2", "LAMBDA"))
    no_jitter: bool = option(False, "no colour jitter", group=SCHEDULE)
    clusters: Optional[str] = option(None, "initialise from this centroids.h5 instead of running k-means",
                                     group=CLUSTERS)
    output: Optional[str] = option(None, "output folder (Hub layout + train/)", group=RUN, required=True)
    resume: bool = option(False, "continue the run in --output from its last checkpoint", group=RUN)
    cache_features: Optional[str] = option(None, "cache the frozen backbone layers' outputs (in DIR, default "
                                           "OUTPUT/feature_cache)", group=RUN, nargs="?", const="", metavar="DIR")
    init_seed: Optional[int] = option(None, "seed of the model's random initialisation (default: --seed)", group=RUN)
    device: str = opt.device_option(group=RUN)
    threads: Optional[int] = option(None, "CPU threads per process (default: cores / processes)", group=RUN)
    push_to_hub: Optional[str] = option(None, "upload the trained model to this Hub repository", group=RUN,
                                        metavar="REPO_ID")
    no_progress: bool = option(False, "no progress bars", group=RUN)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line, generated from TrainCommand and TrainConfig; every option documented."""
    p = parser(prog, __doc__, EPILOG)
    add_dataclass_arguments(p, TrainCommand, TrainConfig)
    return p


def check_args(a: argparse.Namespace) -> None:
    """Cheap checks before any data or weights are read (UsageError naming the option)."""
    out = Path(a.output).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a folder")
    problem = unwritable(out)
    if problem:
        raise UsageError(f"--output {out} cannot be written: {problem}; choose a folder you can write to")
    if a.resume and not (out / "train" / "checkpoint.pt").is_file():
        raise UsageError(f"--resume: no checkpoint at {out / 'train' / 'checkpoint.pt'}; start without --resume")
    if not a.resume and (out / "train" / "checkpoint.pt").exists():
        raise UsageError(f"{out} already holds a run: pass --resume to continue it, or choose another --output")
    if a.clusters and not Path(a.clusters).is_file():
        raise UsageError(f"--clusters {a.clusters}: file not found")
    if a.backbone_weights and a.backbone_weights != "imagenet" and not Path(a.backbone_weights).is_file():
        raise UsageError(f"--backbone-weights {a.backbone_weights}: file not found (or pass 'imagenet')")
    if a.threads is not None and a.threads < 1:
        raise UsageError("--threads must be >= 1")
    opt.check_data_root(a.data_root)
    opt.resolve_device(a.device)
    _check_input_size(a)
    _check_runtimes(a)


def _check_input_size(a: argparse.Namespace) -> None:
    """--input-size within the range of the model asked for (its backbone's stride times the smallest feature map
    its aggregator takes, up to the builder's limit)."""
    if a.input_size is None:
        return
    from .._util.ranges import ranges_for
    from ..models._registry import get_aggregator, get_backbone, get_entry, resolve_name

    for module in a.plugin:
        importlib.import_module(module)
    try:
        entry = get_entry(resolve_name(a.model))
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    side = ranges_for(get_backbone(entry.backbone), get_aggregator(entry.aggregator))["input_size"]
    opt.check_input_size(a.input_size, side, entry.name)


def _check_runtimes(a: argparse.Namespace) -> None:
    """--runtime: known names, once each, and what they need installed, before any training."""
    from ..runtimes import check_available
    from ..runtimes.base import runtime_list_problem

    problem = runtime_list_problem(a.runtime)
    if problem:
        raise UsageError(f"--runtime {problem}")
    for runtime in a.runtime:
        try:
            check_available(runtime)
        except (ImportError, RuntimeError) as err:
            raise UsageError(f"--runtime {runtime}: {err}") from None


def model_overrides(a: argparse.Namespace) -> Dict[str, Any]:
    """Registry overrides from the command line."""
    over = dict(a.model_arg)
    if a.input_size:
        over["input_size"] = tuple(a.input_size)
    if a.backbone_weights:
        over["backbone_weights"] = a.backbone_weights
    if a.train_layers:
        over["train_layers"] = a.train_layers
    return over


def train_config(a: argparse.Namespace, generations: int, extra: Dict[str, Any]) -> TrainConfig:
    """TrainConfig from the arguments (its validation names a bad value): its own options as given, plus the
    generations, the --rerank triple and --no-jitter."""
    options = {f.name: getattr(a, f.name) for f in option_fields(TrainConfig)}
    options.update(temperatures=tuple(a.temperatures), jitter=None if a.no_jitter else tuple(a.jitter))
    return TrainConfig(**options, generations=generations, rerank_k1=int(a.rerank[0]), rerank_k2=int(a.rerank[1]),
                       rerank_lambda=a.rerank[2], extra=extra)


def _train_set(a: "TrainCommand"):
    """The training set: a dataset, or place-labelled images (gsv_cities:DIR, images_csv:FILE) for --batching
    places."""
    from registry.datasets import load_dataset
    from registry.datasets.places import DEFAULT_PLACE_RADIUS_M, PLACE_LAYOUTS, load_place_set

    if a.train_set.partition(":")[0] in PLACE_LAYOUTS:
        if a.batching != "places":
            raise UsageError(f"--train-set {a.train_set} holds places, not queries and a database: add --batching "
                             "places --loss multi_similarity")
        radius = a.pos_radius if a.pos_radius else DEFAULT_PLACE_RADIUS_M
        return load_place_set(a.train_set, a.data_root, a.cities or None, radius).as_dataset()
    if a.cities:
        raise UsageError("--cities picks GSV-Cities cities: give --train-set gsv_cities:DIR")
    return load_dataset(a.train_set, a.data_root, a.tolerance)


def _load_sets(a: argparse.Namespace):
    from registry.datasets import load_dataset

    train = _train_set(a)
    val = None if a.val_set.lower() == "none" else load_dataset(a.val_set, a.data_root, a.tolerance)
    tests = [load_dataset(s, a.data_root, a.tolerance) for s in a.test_set]
    return train, val, tests


def setup(a: argparse.Namespace):
    """Import plugins, join the process group, load data, build the model and the Trainer."""
    import torch

    import registry

    from ..training import Trainer, get_recipe, init_distributed

    for module in a.plugin:
        importlib.import_module(module)
    ctx = init_distributed(a.device)
    if ctx.device.type == "cpu":
        torch.set_num_threads(a.threads or max(1, (os.cpu_count() or 1) // ctx.world_size))
    name = registry.resolve_name(a.model)
    overrides = model_overrides(a)
    train_set, val_set, test_sets = _load_sets(a)
    init_seed = a.seed if a.init_seed is None else a.init_seed
    torch.manual_seed(init_seed)  # reproducible random initialisation of the aggregator (and of random backbones)
    model = registry.create(name, pretrained=a.pretrained or False, **overrides)
    recipe = get_recipe(a.recipe, model)
    generations = a.generations or (RECIPE_GENERATIONS if recipe.supports_generations and a.batching == "tuples"
                                    else 1)
    extra = {"model": name, "model_args": {k: v for k, v in overrides.items() if k != "backbone_weights"},
             "train_set": a.train_set, "val_set": a.val_set, "cache_features": a.cache_features is not None}
    if a.init_seed is not None:  # recorded (and checked on --resume) when given
        extra["init_seed"] = a.init_seed
    trainer = Trainer(model, train_set, a.output, train_config(a, generations, extra), val_set=val_set, ctx=ctx,
                      cache_features=a.cache_features is not None, cache_dir=a.cache_features or None,
                      progress=not a.no_progress)
    return trainer, test_sets


def train(a: argparse.Namespace, trainer, test_sets) -> Optional[Dict[str, Any]]:
    """Initialise clusters, train and finish (test sets, other runtimes, the Hub layout and summary.json, written by
    the trainer), optionally push; returns the summary on rank 0."""
    from ..training import load_clusters
    from ..training.finish import FinalEvaluation

    model, ctx = trainer.model, trainer.ctx
    start = time.time()  # the summary's wall time: clusters, training, whitening, test evaluation
    if not a.resume and not a.pretrained:
        if a.clusters:
            load_clusters(model, a.clusters)
            if ctx.is_main:
                trainer.folder.copy_centroids(a.clusters)
        else:
            trainer.init_clusters()
    final = FinalEvaluation(test_sets, a.runtime, a.calibration_images,
                            command=" ".join([getattr(a, "prog", PROG)] + list(a.argv)), started=start)
    summary = trainer.fit(resume=a.resume, require_initialised_clusters=not a.pretrained, final=final)
    if not ctx.is_main:
        return None
    if a.push_to_hub:
        summary["hub_commit"] = model.push_to_hub(a.push_to_hub, training=trainer.training_facts(),
                                                  recalls=trainer.recall_facts(summary))
    shown = {k: summary.get(k) for k in ("best", "final_val", "test", "wall_seconds", "hub_commit")}
    if "runtimes" in summary:
        shown["runtimes"] = {r: v["recalls"] for r, v in summary["runtimes"].items()}
    print(json.dumps(shown))
    return summary


def _write_failed(err: BaseException, output: str) -> str:
    """Writing the final model or the summary failed (a full disk, a folder made read-only): what to do."""
    full = " (the disk is full)" if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) else ""
    return (f"could not write to {output}{full}: {err}. The last checkpoint is kept: free space (or fix the folder), "
            "then run the same command with --resume")


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    """Parse, check, set up (a bad option or input: exit status 2 and one line), then train (a checkpoint, image or
    write failure: status 1, the message says what was kept). `prog` is the command as the user typed it: messages
    and summary.json name it."""
    from registry.datasets import ImageReadError

    from ..training import CheckpointError

    argv = list(sys.argv[1:] if argv is None else argv)
    output = {"dir": "the output folder"}

    def body() -> int:
        a = build_parser(prog).parse_args(argv)
        a.prog, a.argv = prog, argv
        output["dir"] = a.output
        check_args(a)
        from ._console import console_logging

        with console_logging():
            run(a)
        return 0

    return run_command(prog, body, {CheckpointError: None, ImageReadError: None,
                                    OSError: lambda err: _write_failed(err, output["dir"])})


def run(a: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """Set up and train the run the checked arguments describe; the summary on rank 0 (None on the others)."""
    from ..training import shutdown

    trainer = None
    try:
        try:
            trainer, test_sets = setup(a)
        except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError) as err:
            raise UsageError(err.args[0] if err.args else str(err)) from None
        return train(a, trainer, test_sets)
    finally:
        if trainer is not None:
            shutdown(trainer.ctx, trainer)
