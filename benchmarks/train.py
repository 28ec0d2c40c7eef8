"""Train any registry model (ClusVPR, NetVLAD, GeM, plugins) with one recipe and budget; see --help.

    python benchmarks/train.py --model clusvpr --backbone-weights ../shared/weights/vgg16_hed_conv.safetensors \\
        --input-size 96 192 --cache-features --model-arg whitening_dim=1024 --output runs/clusvpr
    torchrun --nproc_per_node=4 benchmarks/train.py --model netvlad ...      # DDP, one process per GPU
    python benchmarks/train.py ... --resume                                    # continue a killed run

The trainer lives in the installed package (registry.training.cli): this script is the same command as
`python -m registry.train` and `vpr-train`, under the name users know.
"""
from registry.training.cli import main

if __name__ == "__main__":
    main(prog="train.py")
