"""Console output of the command lines: the packages' log records as plain lines on stderr, clear of tqdm bars.

Library code logs (`logging.getLogger(__name__)`) and never prints; only the CLIs turn the records into output.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, List, Optional, Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

from ..models._registry import PLUGIN_GROUP, declared_entry_points


def packages() -> List[str]:
    """`registry` and the top-level packages of the declared plugins (model and recipe entry points)."""
    from ..training.recipes import RECIPE_GROUP

    eps = declared_entry_points(PLUGIN_GROUP) + declared_entry_points(RECIPE_GROUP)
    return ["registry"] + sorted({ep.value.split(":")[0].split(".")[0] for ep in eps} - {"registry"})


@contextlib.contextmanager
def console_logging(names: Optional[Sequence[str]] = None, level: int = logging.INFO) -> Iterator[None]:
    """Within the block, INFO and above from these loggers (default: `packages()`) go to stderr as bare messages,
    written between tqdm bars (`logging_redirect_tqdm`); the loggers' own settings come back afterwards."""
    names = packages() if names is None else names
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(level)
            lg.propagate = False
            lg.handlers = [handler]
        with logging_redirect_tqdm(loggers=loggers):
            yield
    finally:
        for lg, (lvl, propagate, handlers) in zip(loggers, saved):
            lg.setLevel(lvl)
            lg.propagate = propagate
            lg.handlers = handlers
