"""The benchmark runner: compare VPR models on real datasets (`python -m registry.bench`, `vpr-bench`).

Modules: `cli` (options, checked into a RunConfig), `models` (what --models names), `data` (--datasets),
`evaluate` (one model on one dataset), `metrics` (size, GFLOPs, speed, memory), `report` (results.json/csv/md),
`plots`, `grids` (prediction grids), `attention` (heat maps) and `runner` (the loop over every pair).
"""
from .cli import RunConfig, build_parser, parse_args
from .runner import PairsFailed, main, run

__all__ = ["PairsFailed", "RunConfig", "build_parser", "main", "parse_args", "run"]
