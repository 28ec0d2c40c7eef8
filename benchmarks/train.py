"""Train any registry model (ClusVPR, NetVLAD, GeM, plugins) with one recipe and budget; see --help.

    python benchmarks/train.py --model clusvpr --backbone-weights ../shared/weights/vgg16_hed_conv.safetensors \\
        --data-root ../shared/data --input-size 96 192 --cache-features --model-arg whitening_dim=1024 \\
        --output runs/clusvpr
    torchrun --nproc_per_node=4 benchmarks/train.py --model netvlad ...      # DDP, one process per GPU
    python benchmarks/train.py ... --resume                                    # continue a killed run

The same command as `vpr train` (registry.cli.train), under the name users of the repository type.
"""
import sys

from registry.cli.train import main

if __name__ == "__main__":
    sys.exit(main(prog=f"python {sys.argv[0]}"))
