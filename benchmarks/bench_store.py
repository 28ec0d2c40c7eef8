"""Extraction into the map store (Lance, registry.evaluation.extract_to_store) against the memory-mapped store it
replaced (a float32 .npy filled chunk by chunk, each chunk flushed, then its done-byte flushed: that store's write
path, reproduced here since the package no longer has it). Runs interleaved, one thread:

  python benchmarks/bench_store.py --images 128 --repeats 2    # the released ClusVPR on Nordland images
  python benchmarks/bench_store.py --cheap-model --images 2048 # the store's share at its largest: a model that
                                                              # costs nothing (pooled pixels, 8192-d)

Prints a Markdown table (median seconds per variant and the ratio Lance / memmap), also written to
benchmarks/map_scale/store_extraction.md.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "map_scale" / "store_extraction.md"


def memmap_store(folder: Path, n: int, dim: int, chunk: int, rows_of) -> None:
    """The earlier store's write path: descriptors.npy (open_memmap) and chunks.npy, one flush each per chunk."""
    folder.mkdir(parents=True)
    desc = np.lib.format.open_memmap(folder / "descriptors.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    np.save(folder / "chunks.npy", np.zeros(-(-n // chunk), dtype=np.uint8))
    done = np.load(folder / "chunks.npy", mmap_mode="r+")
    for c in range(len(done)):
        span = slice(c * chunk, min((c + 1) * chunk, n))
        desc[span] = rows_of(span)
        desc.flush()
        done[c] = 1
        done.flush()


class CheapModel(torch.nn.Module):
    """8192-d descriptors for almost no compute (8 x 32 x 32 pooled pixels): extraction time is decoding + storage."""

    descriptor_dim = 8192

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(3, 8, 1)
        self.input_config = {"input_size": (3, 96, 192), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
                             "resize": "fixed", "interpolation": "bilinear"}

    def forward(self, x):
        import torch.nn.functional as F

        return F.normalize(F.adaptive_avg_pool2d(self.mix(x), (32, 32)).flatten(1), dim=-1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=128, help="Nordland summer images to extract (default 128)")
    p.add_argument("--chunk", type=int, default=32, help="rows per commit / chunk (default 32)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cheap-model", action="store_true", help="a model that costs nothing: pooled pixels, 8192-d")
    a = p.parse_args(argv)
    import registry
    from registry.evaluation import extract_descriptors, extract_to_store

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_store_"))
    times = {"memmap store": [], "Lance map store": []}
    images = sorted(str(x) for x in (DATA / "nordland" / "summer").iterdir())[: a.images]
    model = CheapModel() if a.cheap_model else registry.create("clusvpr_vgg16", pretrained=True).eval()
    who = "a model that costs nothing (pooled pixels)" if a.cheap_model else "the released ClusVPR"
    what = f"extract {len(images)} Nordland images with {who} ({model.descriptor_dim}-d), chunks of {a.chunk}"
    kw = dict(device="cpu", progress=False, batch_size=16)
    runs = {"memmap store": lambda f: memmap_store(f, len(images), model.descriptor_dim, a.chunk,
                                                   lambda s: extract_descriptors(model, images[s], **kw)),
            "Lance map store": lambda f: extract_to_store(model, images, f, chunk_size=a.chunk, **kw)}
    try:
        for name, run in runs.items():  # untimed warm-up: imports (pyarrow, Lance), the engine's runtime, the model
            warm = {"memmap store": lambda f: memmap_store(f, 2, model.descriptor_dim, 2,
                                                           lambda s: extract_descriptors(model, images[s], **kw)),
                    "Lance map store": lambda f: extract_to_store(model, images[:2], f, chunk_size=2, **kw)}[name]
            warm(work / f"warm_{name.split()[0]}")
        for r in range(a.repeats):
            for name, run in runs.items():  # interleaved
                folder = work / f"{name.split()[0]}_{r}"
                t = time.perf_counter()
                run(folder)
                times[name].append(time.perf_counter() - t)
                print(f"{name}: {times[name][-1]:.2f} s", flush=True)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"{what}; {a.repeats} interleaved runs each, median", "", "| store | median s | runs s |",
             "|---|---:|---|"]
    lines += [f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in times.items()]
    lines += ["", f"Lance / memmap: {med['Lance map store'] / med['memmap store']:.3f}x"]
    print("\n".join(lines))
    with open(OUT, "a") as fh:
        fh.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
