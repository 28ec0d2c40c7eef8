"""Train any registry model (ClusVPR, NetVLAD, GeM, plugins) with one recipe and budget; see --help.

The same command as `python -m registry.train`, `vpr-train` and `python benchmarks/train.py`:

    python -m registry.train --model clusvpr --backbone-weights ../shared/weights/vgg16_hed_conv.safetensors \\
        --input-size 96 192 --cache-features --model-arg whitening_dim=1024 --output runs/clusvpr
    torchrun --nproc_per_node=4 -m registry.train --model netvlad ...        # DDP, one process per GPU
    vpr-train ... --resume                                                     # continue a killed run

The output folder is a Hub layout once training ends: registry.create(name, pretrained=DIR) and
benchmarks/run.py --models DIR load it; DIR/train/ holds checkpoints and log.jsonl.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .._files import unwritable

PROG = "vpr-train"  # also `python -m registry.train`; benchmarks/train.py passes "train.py"
# how summary.json's "command" spells each way of running the trainer
_COMMANDS = {"train.py": "benchmarks/train.py"}
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


def whitening_dim_arg(text: str) -> Optional[int]:
    """argparse type of a whitening size: an integer >= 1, or 'none' (no whitening)."""
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whitening size must be >= 1, got {value}")
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line; every option documented."""
    from .config import RECIPE_JITTER

    p = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="registry name or alias (clusvpr, netvlad, gem, ...)")
    m.add_argument("--model-arg", type=_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="registry override, JSON value (e.g. whitening_dim=1024, num_clusters=32, whitening_dim=null)")
    m.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="training and test input size")
    m.add_argument("--backbone-weights", help="local backbone weights file (.safetensors/.pth) or 'imagenet'")
    m.add_argument("--train-layers", help="trainable backbone layers: conv5 (VGG16, default) | layer3 (ResNet-50) | "
                                          "all | none")
    m.add_argument("--pretrained", help="start from trained weights: a Hub-layout folder or org/name[@rev]")
    m.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (a plugin registering models or recipes); repeatable")
    d = p.add_argument_group("data")
    d.add_argument("--train-set", default="nordland_train", help="training dataset: known name, folder or layout:path "
                                                                 "(default nordland_train = places 1..1600)")
    d.add_argument("--val-set", default="nordland_val", help="validation dataset, or 'none' (default nordland_val)")
    d.add_argument("--test-set", action="append", default=[], metavar="SPEC",
                   help="evaluate the final model on this dataset (from images); repeatable")
    d.add_argument("--data-root", help="folder that holds the known datasets")
    d.add_argument("--tolerance", type=int, help="aligned traversals: places that count as the same place")
    d.add_argument("--pos-radius", type=float, help="training positives within this distance (dataset unit)")
    d.add_argument("--neg-radius", type=float, help="training negatives beyond this distance (dataset unit)")
    s = p.add_argument_group("schedule and optimisation")
    s.add_argument("--recipe", default="auto", help="global | pyramid (ClusVPR) | auto: the model's own (default)")
    s.add_argument("--generations", type=int, help="generations (pyramid recipe; default 4, global recipe 1)")
    s.add_argument("--epochs", type=int, default=5, help="epochs per generation (default 5)")
    s.add_argument("--gen0-epochs", type=int, help="epochs of generation 0 (default --epochs)")
    s.add_argument("--queries-per-epoch", type=int, help="training tuples per epoch (default: all queries)")
    s.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"), help="default sgd")
    s.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    s.add_argument("--aggregator-lr-mult", type=float, default=1.0,
                   help="the aggregator learns at lr x this, the backbone at lr (default 1)")
    s.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    s.add_argument("--weight-decay", type=float, default=1e-3, help="default 1e-3")
    s.add_argument("--lr-step", type=int, default=5, help="StepLR period in epochs (default 5)")
    s.add_argument("--lr-gamma", type=float, default=0.5, help="StepLR factor (default 0.5; 1 = constant)")
    s.add_argument("--loss", default="sare_ind", choices=("sare_ind", "sare_joint", "triplet"), help="hard loss")
    s.add_argument("--margin", type=float, default=0.1 ** 0.5, help="triplet margin (default sqrt(0.1))")
    s.add_argument("--temperatures", type=float, nargs="+", default=[0.06, 0.06, 0.05, 0.04],
                   help="first: hard loss and student; then the teacher's per generation (default 0.06 0.06 0.05 0.04)")
    s.add_argument("--soft-weight", type=float, default=0.5, help="weight of the soft loss (default 0.5)")
    s.add_argument("--batch-size", type=int, default=1, help="tuples per step per process (default 1)")
    s.add_argument("--neg-num", type=int, default=1, help="hard negatives per tuple (default 1)")
    s.add_argument("--neg-pool", type=int, default=1000, help="random negatives ranked per query (default 1000)")
    s.add_argument("--pos-num", type=int, default=1, help="difficult positives per tuple, pyramid (default 1)")
    s.add_argument("--pos-pool", type=int, default=20, help="nearest positives they are drawn from (default 20)")
    s.add_argument("--cache-size", type=int, default=1000, help="queries per descriptor refresh (default 1000)")
    s.add_argument("--rerank", type=float, nargs=3, default=[20, 1, 0.1], metavar=("K1", "K2", "LAMBDA"),
                   help="k-reciprocal re-ranking for difficult positives (default 20 1 0.1)")
    s.add_argument("--jitter", type=float, nargs=4, default=list(RECIPE_JITTER), metavar=("B", "C", "S", "H"),
                   help="colour jitter of training images (default 0.7 0.7 0.7 0.5)")
    s.add_argument("--no-jitter", action="store_true", help="no colour jitter")
    s.add_argument("--select-by", default="R@5", choices=("R@1", "R@5", "R@10"), help="best-model metric (default R@5)")
    s.add_argument("--pca-images", type=int, default=10_000, help="training images for PCA-whitening (default 10000)")
    s.add_argument("--whitening-dims", type=whitening_dim_arg, nargs="+", metavar="DIM",
                   help="choose the whitening size on validation among these (integers up to the model's "
                        "whitening_dim, or 'none'); default: keep the model's whitening_dim")
    c = p.add_argument_group("clusters")
    c.add_argument("--clusters", help="initialise from this centroids.h5 instead of running k-means")
    c.add_argument("--cluster-descriptors", type=int, default=50_000, help="descriptors for k-means (default 50000)")
    c.add_argument("--cluster-per-image", type=int, default=100, help="descriptors per image (default 100)")
    r = p.add_argument_group("run")
    r.add_argument("--output", required=True, help="output folder (Hub layout + train/)")
    r.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    r.add_argument("--cache-features", nargs="?", const="", metavar="DIR",
                   help="cache the frozen backbone layers' outputs (in DIR, default OUTPUT/feature_cache)")
    r.add_argument("--seed", type=int, default=0,
                   help="random seed of tuple mining, dropout and jitter, and of the two below unless given "
                        "(default 0)")
    r.add_argument("--init-seed", type=int, help="seed of the model's random initialisation (default: --seed)")
    r.add_argument("--cluster-seed", type=int, help="seed of the k-means sample and k-means (default: --seed)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    r.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: on for CUDA)")
    r.add_argument("--num-workers", type=int, default=0, help="image-loading workers (default 0)")
    r.add_argument("--eval-batch-size", type=int, default=32, help="batch for descriptors (default 32)")
    r.add_argument("--threads", type=int, help="CPU threads per process (default: cores / processes)")
    r.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the trained model to this Hub repository")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_args(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Cheap checks before anything heavy is imported."""
    out = Path(a.output).expanduser()
    if out.exists() and not out.is_dir():
        parser.error(f"--output {out} exists and is not a folder")
    problem = unwritable(out)
    if problem:
        parser.error(f"--output {out} cannot be written: {problem}; choose a folder you can write to")
    if a.resume and not (out / "train" / "checkpoint.pt").is_file():
        parser.error(f"--resume: no checkpoint at {out / 'train' / 'checkpoint.pt'}; start without --resume")
    if not a.resume and (out / "train" / "checkpoint.pt").exists():
        parser.error(f"{out} already holds a run: pass --resume to continue it, or choose another --output")
    if a.clusters and not Path(a.clusters).is_file():
        parser.error(f"--clusters {a.clusters}: file not found")
    if a.backbone_weights and a.backbone_weights != "imagenet" and not Path(a.backbone_weights).is_file():
        parser.error(f"--backbone-weights {a.backbone_weights}: file not found (or pass 'imagenet')")
    if a.input_size and min(a.input_size) < 16:
        parser.error(f"--input-size {a.input_size} is too small (at least 16 x 16)")
    if a.threads is not None and a.threads < 1:
        parser.error("--threads must be >= 1")


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


def train_config(a: argparse.Namespace, generations: int, extra: Dict[str, Any]):
    """TrainConfig from the arguments (its validation names a bad value)."""
    from . import TrainConfig

    return TrainConfig(
        generations=generations, epochs=a.epochs, gen0_epochs=a.gen0_epochs, queries_per_epoch=a.queries_per_epoch,
        optimizer=a.optimizer, lr=a.lr, aggregator_lr_mult=a.aggregator_lr_mult, momentum=a.momentum,
        weight_decay=a.weight_decay, lr_step=a.lr_step, lr_gamma=a.lr_gamma, loss=a.loss, margin=a.margin,
        temperatures=tuple(a.temperatures),
        soft_weight=a.soft_weight, recipe=a.recipe, batch_size=a.batch_size, neg_num=a.neg_num, neg_pool=a.neg_pool,
        pos_num=a.pos_num, pos_pool=a.pos_pool, cache_size=a.cache_size, pos_radius=a.pos_radius,
        neg_radius=a.neg_radius, rerank_k1=int(a.rerank[0]), rerank_k2=int(a.rerank[1]), rerank_lambda=a.rerank[2],
        jitter=None if a.no_jitter else tuple(a.jitter), select_by=a.select_by, pca_images=a.pca_images,
        whitening_dims=a.whitening_dims,
        cluster_descriptors=a.cluster_descriptors, cluster_per_image=a.cluster_per_image, seed=a.seed,
        cluster_seed=a.cluster_seed, amp=a.amp,
        eval_batch_size=a.eval_batch_size, num_workers=a.num_workers, extra=extra,
    )


def _load_sets(a: argparse.Namespace):
    from registry.datasets import load_dataset

    train = load_dataset(a.train_set, a.data_root, a.tolerance)
    val = None if a.val_set.lower() == "none" else load_dataset(a.val_set, a.data_root, a.tolerance)
    tests = [load_dataset(s, a.data_root, a.tolerance) for s in a.test_set]
    return train, val, tests


def evaluate(model, datasets: Sequence, batch_size: int, device) -> Dict[str, Dict[str, float]]:
    """Recall@1/5/10 of the final model on each test set, from image files."""
    from registry.evaluation import extract_dataset, recall_at_n

    out = {}
    for ds in datasets:
        q, db = extract_dataset(model, ds, batch_size=batch_size, device=device)
        rec = recall_at_n(q, db, ds.positives, (1, 5, 10), ignore=ds.ignore)["recall"]
        out[ds.name] = {f"R@{n}": round(float(v), 2) for n, v in rec.items()}
    return out


def setup(a: argparse.Namespace):
    """Import plugins, join the process group, load data, build the model and the Trainer."""
    import torch

    import registry

    from . import Trainer, get_recipe, init_distributed

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
    generations = a.generations or (4 if recipe.supports_generations else 1)
    extra = {"model": name, "model_args": {k: v for k, v in overrides.items() if k != "backbone_weights"},
             "train_set": a.train_set, "val_set": a.val_set, "cache_features": a.cache_features is not None}
    if a.init_seed is not None:  # recorded (and checked on --resume) when given
        extra["init_seed"] = a.init_seed
    trainer = Trainer(model, train_set, a.output, train_config(a, generations, extra), val_set=val_set, ctx=ctx,
                      cache_features=a.cache_features is not None, cache_dir=a.cache_features or None,
                      progress=not a.no_progress)
    return trainer, test_sets


def train(a: argparse.Namespace, trainer, test_sets) -> Optional[Dict[str, Any]]:
    """Initialise clusters, train, evaluate on the test sets, optionally push; returns the summary on rank 0."""
    from .._atomic import atomic_path
    from . import load_clusters

    model, ctx = trainer.model, trainer.ctx
    start = time.time()
    if not a.resume and not a.pretrained:
        if a.clusters:
            load_clusters(model, a.clusters)
            if ctx.is_main:
                with atomic_path(Path(a.output) / "centroids.h5") as tmp:
                    shutil.copyfile(a.clusters, tmp)
        else:
            trainer.init_clusters()
    summary = trainer.fit(resume=a.resume, require_initialised_clusters=not a.pretrained)
    if not ctx.is_main:
        return None
    summary["test"] = evaluate(model, test_sets, a.eval_batch_size, ctx.device)
    summary["wall_seconds"] = round(time.time() - start, 1)  # clusters, training, whitening, test evaluation
    val = trainer.val_set
    recalls = {**({val.name: summary["final_val"]} if val else {}), **summary["test"]} or None
    if summary["test"]:
        model.save_pretrained(a.output, training=trainer.training_facts(), recalls=recalls)
    prog = getattr(a, "prog", PROG)
    summary["command"] = " ".join([_COMMANDS.get(prog, prog)] + sys.argv[1:])
    with atomic_path(Path(a.output) / "train" / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if a.push_to_hub:
        summary["hub_commit"] = model.push_to_hub(a.push_to_hub, training=trainer.training_facts(), recalls=recalls)
    print(json.dumps({k: summary.get(k) for k in ("best", "final_val", "test", "wall_seconds", "hub_commit")}))
    return summary


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> Optional[Dict[str, Any]]:
    """Parse, check, set up (errors exit with status 2 and one line), then train. `prog` names the command in
    messages and in summary.json (the shim benchmarks/train.py passes its own name)."""
    from .._console import console_logging

    with console_logging():
        return _main(argv, prog)


def _main(argv: Optional[List[str]], prog: str) -> Optional[Dict[str, Any]]:
    from registry.datasets import ImageReadError

    from . import CheckpointError, shutdown

    parser = build_parser(prog)
    a = parser.parse_args(argv)
    a.prog = prog
    check_args(parser, a)
    trainer = None
    try:
        try:
            trainer, test_sets = setup(a)
        except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError) as err:
            print(f"{prog}: error: {err.args[0] if err.args else err}", file=sys.stderr)
            sys.exit(2)
        try:
            return train(a, trainer, test_sets)
        except (CheckpointError, ImageReadError) as err:  # the message says what was kept and what to do
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(1)
        except OSError as err:  # writing the final model or the summary (a full disk, a folder made read-only)
            full = " (the disk is full)" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            print(f"{prog}: error: could not write to {a.output}{full}: {err}. The last checkpoint is kept: free "
                  "space (or fix the folder), then run the same command with --resume", file=sys.stderr)
            sys.exit(1)
    finally:
        if trainer is not None:
            shutdown(trainer.ctx, trainer)



def console_main(prog: str = PROG) -> int:
    """The `vpr-train` console script: train, exit status 0 (errors exit earlier with their own status)."""
    main(prog=prog)
    return 0
