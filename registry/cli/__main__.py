"""`python -m registry.cli`: the `vpr` command (see registry.cli)."""
import sys

from . import main

sys.exit(main(prog="python -m registry.cli"))
