"""`python -m registry.train`: the trainer's command line (registry.training.cli; see --help)."""
from .training.cli import console_main

if __name__ == "__main__":
    raise SystemExit(console_main("python -m registry.train"))
