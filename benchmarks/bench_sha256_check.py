"""What the Hub layer's own check costs: the sha256 of a release's weights against a whole pretrained load.

    python benchmarks/bench_sha256_check.py      # the bundled ClusVPR release (34 MiB of float16 weights)
"""
import time

import registry
from registry.hub import sha256_file


def main(repeats: int = 3) -> None:
    folder = registry.get_entry("clusvpr_vgg16").release().folder
    weights = folder / "model.safetensors"
    sha256_file(weights)  # warm the page cache
    start = time.perf_counter()
    for _ in range(repeats):
        sha256_file(weights)
    digest = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        registry.create("clusvpr_vgg16", pretrained=True)
    load = (time.perf_counter() - start) / repeats
    print(f"{weights.stat().st_size / 2**20:.1f} MiB: sha256 {digest * 1000:.0f} ms, pretrained load "
          f"{load * 1000:.0f} ms ({digest / load:.1%} of it)")


if __name__ == "__main__":
    main()
