"""How much exact-search recall at 10^5 moves between draws of the distractors, for both generators of
bench_map_scale (section 9's full-space one and ProjectedDistractors), on the real ClusVPR whitened-256 map.

  python benchmarks/bench_map_draws.py --work W [--seeds 1 2 3] [--full-seeds 1 2]

Prints and writes benchmarks/map_scale/distractor_draws.md: R@1/5/10 of exact search per generator and seed (seed 0
of each is drawn in chunks as its map file is, but the 10^5 prefix of the curve's 10^7 map is another draw).
Recall only (no timing)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("bench_map_scale", Path(__file__).with_name("bench_map_scale.py"))
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)

N = 10**5


def _recall(q, pos, db) -> dict:
    from registry.evaluation import recall_at_n

    return recall_at_n(q, db, pos, (1, 5, 10))["recall"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="*", default=(0, 1, 2, 3, 4))
    p.add_argument("--full-seeds", type=int, nargs="*", default=(0, 1, 2))
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "map_scale" / "distractor_draws.md")
    a = p.parse_args(argv)
    q, pos, real, n_pos, reduce = scale.real_descriptors(a.work, "clusvpr_vgg16", 256)
    qr = reduce(q)
    gen = scale.ProjectedDistractors(real[n_pos:], reduce.whitening)
    base = reduce(real)
    lines = ["| generator | seed | R@1 | R@5 | R@10 |", "|---|---:|---:|---:|---:|"]
    for name, seeds in (("projected (ProjectedDistractors)", a.seeds), ("full space (section 9)", a.full_seeds)):
        chunk = 1 << 17 if name.startswith("projected") else max(256, 2**25 // real.shape[1])  # as their map files
        for seed in seeds:
            rows = [base]
            for s in range(len(real), N, chunk):
                m = min(chunk, N - s)
                rows.append(gen.draw(s, m, seed) if name.startswith("projected")
                            else scale._unit(reduce(scale._distractors(real[n_pos:], s, m, seed))))
            r = _recall(qr, pos, np.concatenate(rows))
            lines.append(f"| {name} | {seed} | {r[1]:.1f} | {r[5]:.1f} | {r[10]:.1f} |")
            print(lines[-1], flush=True)
    a.out.write_text(f"Exact search, ClusVPR whitened-256, {N:,} images, 511 queries\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
