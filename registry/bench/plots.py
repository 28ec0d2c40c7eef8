"""Plots of a run (matplotlib, Agg): Recall@N curves per dataset, and encoding speed against Recall@1."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from registry._util.atomic import atomic_path

from .report import label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _datasets(records: Sequence[Dict[str, Any]]) -> List[str]:
    return list(dict.fromkeys(r["dataset"] for r in records))


def recall_curves(records: Sequence[Dict[str, Any]], path: Path) -> Path:
    """One panel per dataset, one Recall@N line per model."""
    plt = _pyplot()
    names = _datasets(records)
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in (r for r in records if r["dataset"] == name):
            ns = sorted(int(n) for n in r["recall"])
            ax.plot(ns, [r["recall"][n] for n in ns], marker="o", label=label(r) + ("" if r["trained"] else " *"))
        ns = sorted({int(n) for r in records for n in r["recall"]})
        ax.set(title=name, xlabel="N", ylabel="Recall@N (%)", ylim=(0, 100), xscale="log", xticks=ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not all(r["trained"] for r in records):
        fig.text(0.01, 0.01, "* untrained / off-the-shelf weights", fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def speed_vs_recall(records: Sequence[Dict[str, Any]], path: Path) -> Path:
    """Encoding throughput (images/s) against Recall@1, marker per dataset, label per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    markers = "osD^vP*X"
    for i, name in enumerate(_datasets(records)):
        rows = [r for r in records if r["dataset"] == name]
        ax.scatter([r["images_per_s"] for r in rows], [r["recall"][min(r["recall"])] for r in rows],
                   marker=markers[i % len(markers)], label=name)
        for r in rows:
            ax.annotate(label(r), (r["images_per_s"], r["recall"][min(r["recall"])]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    n1 = min(records[0]["recall"])
    ax.set(xlabel="encoding throughput (images/s)", ylabel=f"Recall@{n1} (%)", ylim=(0, 100))
    ax.set_xlim(left=0, right=1.15 * max(r["images_per_s"] for r in records))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, title="dataset", title_fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)
