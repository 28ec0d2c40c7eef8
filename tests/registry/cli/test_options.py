"""One source of truth per command-line option: every flag of the runner, the trainer and the whitening sweep is
generated from one dataclass field (registry._util.options.option), with that field's default and a help text."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from registry._util.options import is_option
from registry.cli import bench as bench_cli
from registry.cli import sweep
from registry.cli import train as train_cli
from registry.training.config import TrainConfig

CLIS = {
    "vpr bench": (bench_cli.build_parser, (bench_cli.RunOptions,)),
    "vpr train": (train_cli.build_parser, (train_cli.TrainCommand, TrainConfig)),
    "vpr whitening-sweep": (sweep.build_parser, (sweep.SweepOptions,)),
}


def _option_fields(classes) -> dict:
    fields = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if is_option(f):
                assert f.name not in fields, f"option {f.name} is declared twice"
                fields[f.name] = f
    return fields


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _plain(value):
    """Lists and tuples compare alike (argparse gives lists for nargs options; the dataclasses hold tuples)."""
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("name", sorted(CLIS))
def test_every_flag_has_its_dataclass_fields_default_and_a_help_text(name):
    build, classes = CLIS[name]
    fields = _option_fields(classes)
    actions = [a for a in build()._actions if a.dest != "help"]
    problems = []
    for action in actions:
        flag = "/".join(action.option_strings) or action.dest
        f = fields.get(action.dest)
        if f is None:
            problems.append(f"{flag} is not declared on {[c.__name__ for c in classes]}")
            continue
        if not action.help or "{default}" in action.help:
            problems.append(f"{flag} has no help text (or an unfilled one): {action.help!r}")
        if _plain(action.default) != _plain(_default(f)):
            problems.append(f"{flag} defaults to {action.default!r} but {f.name} to {_default(f)!r}")
        stated = _default(f) not in (None, False, ())
        if stated and "default" in f.metadata["help"] and "{default}" not in f.metadata["help"]:
            problems.append(f"{flag}'s help spells its default out instead of showing the field's ({{default}})")
    assert problems == []
    assert sorted(a.dest for a in actions) == sorted(fields), "an option field without a flag, or the reverse"


def test_help_shows_defaults_as_they_are_typed():
    bench = bench_cli.build_parser().format_help()
    assert "N values of Recall@N (default 1,5,10,20)" in bench
    assert "comma-separated models (default clusvpr,netvlad,gem)" in bench
    train = " ".join(train_cli.build_parser().format_help().split())
    assert "(default 0.06 0.06 0.05 0.04)" in train and "(default 20 1 0.1)" in train
    assert "learning rate (default 0.0001)" in train


def test_the_trainers_default_options_are_train_configs_defaults(tmp_path):
    """Parsing only the required options gives TrainConfig() itself (the generations are resolved by the recipe)."""
    a = train_cli.build_parser().parse_args(["--model", "netvlad", "--output", str(tmp_path / "o")])
    assert train_cli.train_config(a, TrainConfig().generations, {}) == TrainConfig()


def test_the_runners_retrieval_defaults_are_the_librarys():
    """The runner's parser does not import registry.evaluation (--help stays fast): its index and re-ranking
    defaults must equal IndexSpec's and k_reciprocal_rerank's."""
    from registry.evaluation import IndexSpec, k_reciprocal_rerank
    from registry.evaluation.index import DEFAULT_PCA_DIM

    options = bench_cli.RunOptions()
    spec = IndexSpec()
    assert (options.pq_nbits, options.nprobe, options.hnsw_m, options.ef_construction, options.ef_search) == \
        (spec.nbits, spec.nprobe, spec.hnsw_m, spec.ef_construction, spec.ef_search)
    rerank = inspect.signature(k_reciprocal_rerank).parameters
    assert (options.rerank_k1, options.rerank_k2, options.rerank_lambda) == \
        (rerank["k1"].default, rerank["k2"].default, rerank["lambda_value"].default)
    pca_help = next(f for f in dataclasses.fields(bench_cli.RunOptions) if f.name == "pca_dim").metadata["help"]
    assert f"(default {DEFAULT_PCA_DIM})" in pca_help
