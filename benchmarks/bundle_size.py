"""What storing the releases' shared tensors once saves, and how much of NetVLAD's whitening that room holds.

    python benchmarks/bundle_size.py --out benchmarks/release_bundle/bundle_size.json


It reads the release folders that ship in the package (ClusVPR, NetVLAD, GeM), lists the tensors that are
bit-identical across them, bundles them into a temporary folder (`registry.hub.bundle_releases`; the package's
folders are only read), checks that every bundled release loads exactly the tensors of its ordinary folder, and
compares the bytes. The whitening NetVLAD chose on validation is sized from its config.json (input dimension: its
descriptor without whitening; output: the chosen size) as the layout stores it: U, lams and mu in model.safetensors
(float32, or float16 for U if the half-precision save covered it) and again in pca.h5 (always float32, with Utmu),
with pca.h5's overhead measured on GeM's pca.h5. Writes the figures as JSON (--out), the Markdown tables rendered
from them beside it (.md) and prints the tables; the sizes do not depend on the machine or its load.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import torch
from _outputs import write_outputs

import registry
import registry.hub as hub

MODELS = ("clusvpr_vgg16", "netvlad_vgg16", "gem_vgg16")
# VGG16's `features` index of each convolution, as the backbone names its tensors
VGG16_CONVS = {0: "conv1_1", 2: "conv1_2", 5: "conv2_1", 7: "conv2_2", 10: "conv3_1", 12: "conv3_2", 14: "conv3_3",
               17: "conv4_1", 19: "conv4_2", 21: "conv4_3", 24: "conv5_1", 26: "conv5_2", 28: "conv5_3"}
MB = 1e6


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _layer(name: str) -> str:
    parts = name.split(".")
    if parts[:2] == ["backbone", "features"] and int(parts[2]) in VGG16_CONVS:
        return VGG16_CONVS[int(parts[2])]
    return name


def shared_tensors(folders: List[Path]) -> List[Dict[str, Any]]:
    """Each group of releases that share tensors: the releases, the layers, the tensor count and their bytes."""
    releases = [hub.read_release(f) for f in folders]
    groups = hub.shared_groups(releases)
    rows = []
    for members, names in sorted(groups.items(), key=lambda g: -len(g[0])):
        first = releases[min(members)]
        layers = sorted({_layer(n) for n in names}, key=lambda s: (len(s), s))
        rows.append({"releases": [releases[i].folder.name for i in sorted(members)], "layers": layers,
                     "tensors": len(names), "bytes": sum(len(first.tensors[n].data) for n in names),
                     "dtypes": sorted({first.tensors[n].dtype for n in names})})
    return rows


def bundle_and_check(folders: List[Path], tmp: Path) -> Dict[str, Any]:
    """Bundle `folders` into `tmp` and check every bundled release loads exactly its ordinary folder's tensors."""
    report = hub.bundle_releases(folders, tmp / "_shared", tmp / "bundled")
    for folder in folders:
        want = registry.VPRModel.from_pretrained(str(folder)).state_dict()
        got = registry.VPRModel.from_pretrained(str(tmp / "bundled" / folder.name)).state_dict()
        if sorted(got) != sorted(want) or any(not torch.equal(got[k], want[k]) for k in want):
            raise SystemExit(f"the bundled {folder.name} does not load the tensors of {folder}")
    return report


def whitening_cost(netvlad: Path, gem: Path) -> Dict[str, Any]:
    """Bytes NetVLAD's chosen whitening adds to its release, per way of storing it."""
    config = json.loads((netvlad / "config.json").read_text())
    in_dim = int(config["descriptor_dim"])  # released without whitening: the NetVLAD descriptor itself
    chosen = int(config["release"]["whitening_dropped"]["chosen_on_validation"])
    gem_config = json.loads((gem / "config.json").read_text())["whitening"]
    gem_values = gem_config["in_dim"] * gem_config["out_dim"] + 2 * gem_config["out_dim"] + gem_config["in_dim"]
    h5_overhead = (gem / "pca.h5").stat().st_size - 4 * gem_values  # U, lams, mu, Utmu: float32

    def cost(dim: int) -> Dict[str, int]:
        u = in_dim * dim
        return {"safetensors_f32": 4 * (u + dim + in_dim), "safetensors_f16": 2 * u + 4 * (dim + in_dim),
                "pca_h5": 4 * (u + 2 * dim + in_dim) + h5_overhead}

    dims = sorted({chosen, 512, 256, 128, 64}, reverse=True)
    return {"in_dim": in_dim, "chosen": chosen, "h5_overhead": h5_overhead, "costs": {d: cost(d) for d in dims}}


def largest_fitting(room: int, per_dim: int, fixed: int) -> int:
    """The largest whitening size d with `per_dim` * d + `fixed` bytes within `room`."""
    return max(0, (room - fixed) // per_dim)


def markdown(result: Dict[str, Any]) -> str:
    lines = ["| releases sharing them | layers | tensors | dtypes | bytes (MB) |", "|---|---|---|---|---|"]
    for row in result["shared"]:
        lines.append(f"| {', '.join(row['releases'])} | {', '.join(row['layers'])} | {row['tensors']} | "
                     f"{', '.join(row['dtypes'])} | {row['bytes'] / MB:.2f} |")
    lines += ["", "| release | today (MB) | bundled folder (MB) |", "|---|---|---|"]
    for row in result["releases"]:
        lines.append(f"| {row['name']} | {row['today'] / MB:.2f} | {row['bundled'] / MB:.2f} |")
    lines.append(f"| shared store | - | {result['shared_store'] / MB:.2f} |")
    lines.append(f"| **total** | **{result['today'] / MB:.2f}** | **{result['bundled'] / MB:.2f}** |")
    lines += ["", f"Bundling saves {result['room'] / MB:.2f} MB, {100 * result['room'] / result['today']:.0f}% of "
              f"today's {result['today'] / MB:.2f} MB."]
    w = result["whitening"]
    lines += ["", f"Room left under today's total: {result['room'] / MB:.2f} MB. NetVLAD whitening "
              f"{w['in_dim']} -> d (chosen on validation: {w['chosen']}):", "",
              "| d | model.safetensors float32 (MB) | model.safetensors float16 U (MB) | pca.h5 copy (MB) | "
              "fits: f32 + pca.h5 / f32 / f16 + pca.h5 / f16 |", "|---|---|---|---|---|"]
    room = result["room"]
    for d, c in w["costs"].items():
        fits = [c["safetensors_f32"] + c["pca_h5"], c["safetensors_f32"], c["safetensors_f16"] + c["pca_h5"],
                c["safetensors_f16"]]
        lines.append(f"| {d} | {c['safetensors_f32'] / MB:.2f} | {c['safetensors_f16'] / MB:.2f} | "
                     f"{c['pca_h5'] / MB:.2f} | {' / '.join('yes' if f <= room else 'no' for f in fits)} |")
    lines += ["", "Largest d that fits: " + ", ".join(f"{k} {v}" for k, v in result["largest_fitting"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/release_bundle/bundle_size.json"),
                        help="the JSON of the figures; the Markdown tables go beside it (.md)")
    args = parser.parse_args()
    folders = [registry.get_entry(m).release().folder for m in MODELS]
    with tempfile.TemporaryDirectory(prefix="bundle-size-") as tmp:
        report = bundle_and_check(folders, Path(tmp))
    today = sum(_folder_bytes(f) for f in folders)
    bundled = report["bytes_after"]
    w = whitening_cost(folders[1], folders[2])
    room, n = today - bundled, w["in_dim"]
    h5 = 4 * n + w["h5_overhead"]  # pca.h5 beside the U, lams and Utmu of each size: mu and the file's overhead
    result = {
        "shared": shared_tensors(folders),
        "releases": [{"name": f.name, "today": _folder_bytes(f), "bundled": r["bytes"]}
                     for f, r in zip(folders, report["releases"])],
        "shared_store": sum(s["bytes"] for s in report["shared"]), "today": today, "bundled": bundled,
        "room": room, "whitening": w,
        "largest_fitting": {
            # per size d: U's column (n values), one lams value, in pca.h5 one Utmu value too; mu (n values) fixed
            "f32 + pca.h5": largest_fitting(room, (4 * n + 4) + (4 * n + 8), 4 * n + h5),
            "f32": largest_fitting(room, 4 * n + 4, 4 * n),
            "f16 + pca.h5": largest_fitting(room, (2 * n + 4) + (4 * n + 8), 4 * n + h5),
            "f16": largest_fitting(room, 2 * n + 4, 4 * n),
        },
    }
    write_outputs(result, args.out, markdown)


if __name__ == "__main__":
    main()
