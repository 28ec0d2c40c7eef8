"""Compare visual place recognition models: Recall@N, size, GFLOPs, speed, memory, weights' origin; see --help.

    python benchmarks/run.py     # the released clusvpr, netvlad, gem on the embedded Corridor + Nordland test
    python benchmarks/run.py --untrained --backbone-weights ../shared/weights/vgg16_hed_conv.safetensors
    python benchmarks/run.py --models clusvpr,org/name@<commit>,./my_dir --datasets pitts30k_test --data-root /data

The same command as `vpr bench` (registry.cli.bench), under the name users of the repository type.
"""
import sys

from registry.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(prog=f"python {sys.argv[0]}"))
