"""`python -m registry.bench`: the benchmark runner (see --help)."""
import sys

from .runner import main

sys.exit(main(prog="python -m registry.bench"))
