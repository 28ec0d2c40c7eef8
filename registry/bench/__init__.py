"""The benchmark runner's library: compare VPR models on real datasets. Its command line is `vpr bench`
(registry.cli.bench); from Python, build a RunConfig and call `run(cfg)`.

Modules: `config` (RunOptions, RunConfig, defaults), `models` (what --models names), `data` (--datasets),
`evaluate` (one model on one dataset), `metrics` (size, GFLOPs, speed, memory), `report` (results.json/csv/md),
`plots`, `grids` (prediction grids), `attention` (heat maps) and `runner` (the loop over every pair).
"""
from .config import RunConfig, RunOptionError, RunOptions
from .runner import PairsFailed, cpu_model, run

__all__ = ["PairsFailed", "RunConfig", "RunOptionError", "RunOptions", "cpu_model", "run"]
