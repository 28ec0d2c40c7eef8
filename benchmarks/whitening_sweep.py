"""Recall@N of trained models at several whitening sizes, chosen on validation and reported on test sets.

    python benchmarks/whitening_sweep.py runs/clusvpr runs/netvlad --val-set nordland_val \\
        --test-set nordland_test --dims 1024 512 256 none --cache-features runs/cache --out sweep.json

The sweep lives in the installed package (registry.training.sweep): this script is the same command as
`python -m registry.training.sweep` and `vpr-whitening-sweep`.
"""
from registry.training.sweep import main

if __name__ == "__main__":
    main(prog="whitening_sweep.py")
