"""The command lines' console: library log records become plain stderr lines only inside console_logging."""
from __future__ import annotations

import logging

from registry.cli._console import console_logging


def test_records_reach_stderr_inside_the_block_and_the_loggers_are_restored(capsys):
    log = logging.getLogger("registry.training.trainer")
    package = logging.getLogger("registry")
    before = (package.level, package.propagate, list(package.handlers))
    with console_logging():
        log.info("epoch=1 loss=0.5")
        logging.getLogger("clusvpr_plugin.pyramid").info("from the plugin")
    log.info("after the block")
    err = capsys.readouterr().err
    assert "epoch=1 loss=0.5\n" in err and "from the plugin\n" in err
    assert "after the block" not in err
    assert (package.level, package.propagate, list(package.handlers)) == before
