"""Render the results pages' tables from the JSON files the benchmark scripts wrote.

  python benchmarks/render_results.py            # rewrite every table between its markers
  python benchmarks/render_results.py --check    # exit 1 when a page differs from what its JSON renders

A rendered table sits in its page between `<!-- table: NAME -->` and `<!-- /table -->`; TABLES below names, for
each NAME, the page and its source: rows of map_curve.json (selected by key, in the order given), a table that a
benchmark script rendered into a Markdown file from its own JSON (copied as it is), or the recalls stored in the
releases' config.json. The columns and their rounding are fixed per table kind and stated in the caption line the
renderer writes above the table, so the same source always gives the same bytes. Pure Python: no numpy, no models.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

BENCH = Path(__file__).resolve().parent
PAGES = BENCH / "results"
MAP_CURVE = BENCH / "map_scale" / "map_curve.json"
MAP_SCALE_MD = BENCH / "map_scale" / "map_scale.md"

MARKER = re.compile(r"<!-- table: (?P<name>[\w/.-]+) -->\n(?P<body>.*?)<!-- /table -->", re.S)

# a row of map_curve.json is named by (series, images, index, search); search None takes every row of that index
RowKey = Tuple[str, int, str, Optional[str]]

W256 = "ClusVPR whitened-256"
C8192 = "ClusVPR 8192"
PROJ = "ClusVPR whitened-256, projected distractors"
NV256 = "NetVLAD whitened-256, projected distractors"
NV32K = "NetVLAD 32768"
PCA_KEPT = "PCA256 (faiss PCAMatrix: keeps its 8192 x 8192 eigenvectors) + IVF-PQ32 L2, refine from disk"
PCA_PROJ = "PCA256 + IVF-PQ32 L2, refine from disk (8192-d)"


@dataclass(frozen=True)
class MapCurveTable:
    """Rows of map_curve.json, one table line each; with_series adds the series as the first column."""
    page: str
    rows: Tuple[RowKey, ...]
    with_series: bool = False


@dataclass(frozen=True)
class ScriptTable:
    """The table number `number` (from 0) of a Markdown file a benchmark script rendered, copied as it is."""
    page: str
    source: Path
    number: int
    caption: str


@dataclass(frozen=True)
class ReleaseTable:
    """One line per release folder, from its config.json: the recalls `vpr release build` stored; with training,
    also what the training recorded there (best epoch, the whitening chosen on validation) and the folder's size."""
    page: str
    releases: Tuple[Path, ...]
    training: bool = False


def _copied(page: str, source: str, number: int, made_by: str, rounding: str) -> ScriptTable:
    """Table `number` of benchmarks/SOURCE (a script's Markdown), its caption saying what wrote it and its rounding."""
    return ScriptTable(page, BENCH / source, number, f"*Copied by `python benchmarks/render_results.py` from "
                       f"`benchmarks/{source}`{made_by}. Rounding: {rounding}.*")


def _json_by(command: str) -> str:
    """The `made_by` of a table whose script renders it from the JSON it wrote: `command` is that script's run."""
    return f", which `{command}` renders from that JSON"


REPO = BENCH.parent
RELEASES = (REPO / "clusvpr_plugin" / "releases" / "clusvpr_vgg16.nordland",
            REPO / "registry" / "releases" / "netvlad_vgg16.nordland",
            REPO / "registry" / "releases" / "gem_vgg16.nordland")

BUNDLE_MADE_BY = (", which `python benchmarks/bundle_size.py --out benchmarks/release_bundle/bundle_size.json` "
                  "renders from that JSON (the sizes do not depend on the machine's load)")

TABLES: Dict[str, Union[MapCurveTable, ScriptTable, ReleaseTable]] = {
    "releases/recalls": ReleaseTable("releases.md", RELEASES),
    "releases/training": ReleaseTable("releases.md", RELEASES, training=True),
    "early_stopping/curve": _copied("early-stopping.md", "training/early_stopping.md", 0,
                                    ", which `python benchmarks/plot_training.py RUN... --json "
                                    "benchmarks/training/early_stopping.json` renders from the runs' log.jsonl and "
                                    "summary.json", "recalls to 0.01 point"),
    "early_stopping/outcome": _copied("early-stopping.md", "training/early_stopping.md", 1, " (the same JSON)",
                                      "recalls to 0.01 point, hours to 0.1"),
    "place_batch_runs/curve": _copied("place-batch-runs.md", "training/place_batch_runs.md", 0,
                                      ", which `python benchmarks/plot_training.py RUN... --json "
                                      "benchmarks/training/place_batch_runs.json` renders from the runs' log.jsonl "
                                      "and summary.json", "recalls to 0.01 point"),
    "place_batch_runs/outcome": _copied("place-batch-runs.md", "training/place_batch_runs.md", 1,
                                        " (the same JSON)", "recalls to 0.01 point, hours to 0.1"),
    "aggregator/variants": _copied("aggregator-cpu.md", "aggregator/aggregator.md", 0, _json_by(
                                   "OMP_NUM_THREADS=2 python benchmarks/bench_aggregator.py --batch 8 --repeats 5 "
                                   "--out benchmarks/aggregator/aggregator.json"),
                                   "milliseconds to 0.1, MiB to the unit"),
    "aggregator/ratios": _copied("aggregator-cpu.md", "aggregator/aggregator.md", 1, " (the same run)",
                                 "ratios to 0.1, memory fractions to 0.001"),
    "aggregator/cwt_parts": _copied("aggregator-cpu.md", "aggregator/cwt_parts.md", 0, _json_by(
                                    "OMP_NUM_THREADS=1 python benchmarks/bench_cwt_parts.py --repeats 7 --threads 1 "
                                    "--out benchmarks/aggregator/cwt_parts.json"),
                                    "milliseconds to 0.1, ratios to 0.1"),
    "onnx/speed": _copied("onnx-export.md", "onnx/onnx.md", 0, _json_by(
                          "OMP_NUM_THREADS=1 python benchmarks/bench_onnx.py --size 192 256 --batch 1 4 --threads 1 "
                          "--seconds 3 --rounds 3 --out benchmarks/onnx/onnx.json"),
                          "images/s and ratios to 0.01, differences to two significant digits"),
    **{f"runner/{run}": _copied("runner-off-the-shelf.md", f"runner/{run}/results.md", 0,
                                ", which the runner wrote (`python benchmarks/run.py ... --output-dir "
                                f"benchmarks/runner/{run}`, the page's command; the file's first line)",
                                "recalls to 0.1 point, GFLOPs and img/s to 0.1, latency to 0.1 ms, memory to 1 MiB")
       for run in ("corridor-120x160", "corridor-240x320", "nordland-128x256")},
    "map_curve/1e5": MapCurveTable("map-curve.md", with_series=True, rows=(
        (W256, 100_000, "flat", ""),
        (W256, 100_000, "IVF-PQ32 inner product (section 9)", "nprobe=64"),
        (W256, 100_000, "IVF-PQ32 L2, refine from disk", "nprobe=64"),
        (W256, 100_000, "IVF-PQ32 L2, refine from disk", "nprobe=64, refine=16"),
        (W256, 100_000, "IVF-PQ64 L2, refine from disk", "nprobe=64, refine=4"),
        (W256, 100_000, "OPQ + IVF-PQ32 L2, refine from disk", "nprobe=64, refine=16"),
        (W256, 100_000, "IVF-PQ32 L2, refine from RAM fp16", "nprobe=64, refine=16"),
        (W256, 100_000, "HNSW efC40", "ef_search=1024"),
        (W256, 100_000, "HNSW efC200", "ef_search=256"),
        (C8192, 100_000, "flat", ""),
        (C8192, 100_000, "IVF-PQ64 inner product (section 9)", "nprobe=64"),
        (C8192, 100_000, "IVF-PQ64 L2, refine from disk", "nprobe=64, refine=16"),
        (C8192, 100_000, PCA_KEPT, "nprobe=64, refine=16"),
        (C8192, 100_000, PCA_PROJ, "nprobe=64, refine=16"),
        (C8192, 100_000, PCA_PROJ, "nprobe=128, refine=16"),
        (C8192, 100_000, PCA_PROJ, "nprobe=256, refine=16"),
    )),
    "map_curve/1e6-projected": MapCurveTable("map-curve.md", rows=tuple(
        (PROJ, 1_000_000, index, None) for index in (
            "flat", "IVF-PQ32 L2, refine from disk", "IVF-PQ64 L2, refine from disk",
            "OPQ + IVF-PQ32 L2, refine from disk", "IVF-PQ32 L2, refine from RAM fp16",
            "IVF-PQ32 L2, refine from RAM sq8", "HNSW efC40", "HNSW efC200"))),
    "map_curve/1e7-1024-lists": MapCurveTable("map-curve.md", rows=(
        (PROJ, 10_000_000, "flat", None), (PROJ, 10_000_000, "IVF-PQ32 L2, refine from disk", None))),
    "map_curve/1e7-4096-lists": MapCurveTable("map-curve.md", rows=(
        (PROJ, 10_000_000, "IVF4096-PQ32 L2, refine from disk", None),)),
    "map_curve/netvlad-whitened": MapCurveTable("map-curve.md", rows=(
        (NV256, 100_000, "flat", ""),
        (NV256, 100_000, "IVF-PQ32 L2, refine from disk", "nprobe=64"),
        (NV256, 100_000, "IVF-PQ32 L2, refine from disk", "nprobe=16, refine=16"),
        (NV256, 100_000, "IVF-PQ32 L2, refine from disk", "nprobe=256, refine=16"),
        (NV256, 1_000_000, "flat", ""),
        (NV256, 1_000_000, "IVF-PQ32 L2, refine from disk", "nprobe=64, refine=16"),
        (NV256, 1_000_000, "IVF-PQ32 L2, refine from disk", "nprobe=128, refine=16"),
        (NV256, 1_000_000, "IVF-PQ32 L2, refine from disk", "nprobe=256, refine=16"),
    )),
    "map_curve/netvlad-32768": MapCurveTable("map-curve.md", rows=tuple(
        (NV32K, 10_000, index, None) for index in (
            "flat", "IVF-PQ64 inner product (section 9)", "IVF-PQ64 L2, refine from disk"))),
    "place_batch/curve": _copied("place-batch-pilot.md", "place_batch/pilot.md", 0, ", which `python "
                                 "benchmarks/place_batch_pilot.py --run tuples=RUN --run places=RUN "
                                 "--run places_lr6e-5=RUN --out "
                                 "benchmarks/place_batch/pilot.json` renders from that JSON (the runs' log.jsonl and "
                                 "CPU samples)", "recalls to 0.01 point"),
    "place_batch/cost": _copied("place-batch-pilot.md", "place_batch/pilot.md", 1, " (the same JSON)",
                                "CPU seconds to the unit, recalls to 0.01 point"),
    "untrained/start": _copied("untrained-start.md", "untrained/start.md", 0, _json_by(
                               "python benchmarks/untrained_start.py --data-root ../shared/data --backbone-weights "
                               "../shared/weights/vgg16_hed_conv.safetensors --threads 1 --out "
                               "benchmarks/untrained/start.json"), "recalls to 0.01 point"),
    "sequence/window": _copied("sequence.md", "sequence/window_sweep.md", 0, _json_by(
                               "python benchmarks/sequence_window_sweep.py --data-root ../shared/data --out "
                               "benchmarks/sequence/window_sweep.json"),
                               "recalls to 0.01 point"),
    "sequence/recall": _copied("sequence.md", "sequence/sequence.md", 0, _json_by(
                               "python benchmarks/bench_sequence.py --out benchmarks/sequence/sequence.json"),
                               "recalls to 0.01 point"),
    "sequence/cost": _copied("sequence.md", "sequence/sequence.md", 1, " (the same run)", "milliseconds to 0.001"),
    "serve/load": _copied("serve.md", "serve/serve.md", 0, ", which `python benchmarks/bench_serve.py --out "
                          "benchmarks/serve/serve.json` (with the settings the page gives) renders from that JSON",
                          "requests/s and latencies to 0.1"),
    "serve/targets": _copied("serve.md", "serve/serve.md", 1, " (the same run)",
                             "images/s to 0.1, the ratio to 1%, RSS to 1 MB, its change to 0.1%"),
    "serve/faults": _copied("serve.md", "serve/serve.md", 2, " (the same run)", "seconds to 0.1"),
    "release_bundle/shared": _copied("release-bundle.md", "release_bundle/bundle_size.md", 0, BUNDLE_MADE_BY,
                                     "megabytes (10^6 bytes) to 0.01"),
    "release_bundle/bytes": _copied("release-bundle.md", "release_bundle/bundle_size.md", 1, " (the same run)",
                                    "megabytes (10^6 bytes) to 0.01"),
    "release_bundle/whitening": _copied("release-bundle.md", "release_bundle/bundle_size.md", 2, " (the same run)",
                                        "megabytes (10^6 bytes) to 0.01"),
    "trust_sweep/after": _copied("trust-sweep.md", "trust_sweep/trust_sweep.md", 0, ", which `python "
                                 "benchmarks/trust_sweep.py` renders from `benchmarks/trust_sweep/trust_sweep.json`",
                                 "counts of cases"),
    "trust_sweep/after-cases": _copied("trust-sweep.md", "trust_sweep/trust_sweep.md", 1, " (the same run)",
                                       "messages cut to 200 characters"),
    "trust_sweep/before": _copied("trust-sweep.md", "trust_sweep/before.md", 0, ", which `python "
                                  "benchmarks/trust_sweep.py --render benchmarks/trust_sweep/before.json` renders "
                                  "from that JSON (the run before the fixes)", "counts of cases"),
    "trust_sweep/before-cases": _copied("trust-sweep.md", "trust_sweep/before.md", 1, " (the same JSON)",
                                        "messages cut to 200 characters (90 for the cases taken from the log)"),
    "map_scale/measured": ScriptTable("map-scale.md", MAP_SCALE_MD, 0, (
        "*Copied by `python benchmarks/render_results.py` from `benchmarks/map_scale/map_scale.md`, which `python "
        "benchmarks/bench_map_scale.py measure` (or `report`) renders from `benchmarks/map_scale/map_scale.json`. "
        "Rounding (the script's): index size to 0.1 GB (0.1 MB below 0.1 GB), bytes per image to the unit, build "
        "time and latencies to 0.01 s / ms, recalls and losses to 0.1 point.*")),
    "map_scale/fit": ScriptTable("map-scale.md", MAP_SCALE_MD, 1, (
        "*Copied by `python benchmarks/render_results.py` from `benchmarks/map_scale/map_scale.md`, computed by "
        "`python benchmarks/bench_map_scale.py report` from the largest measured row of each index in "
        "`benchmarks/map_scale/map_scale.json`. Rounding (the script's): bytes per image to the unit, sizes to 0.1 "
        "GB (0.1 MB below 0.1 GB), the largest map to 3 significant digits.*")),
    "map_scale/reductions": ScriptTable("map-scale.md", BENCH / "map_scale" / "reductions.md", 0, (
        "*Copied by `python benchmarks/render_results.py` from `benchmarks/map_scale/reductions.md`, which `python "
        "benchmarks/bench_map_scale.py reductions` writes directly (no JSON). Rounding (the script's): recalls to "
        "0.1 point.*")),
}

MAP_CURVE_CAPTION = (
    "*Rendered by `python benchmarks/render_results.py` from `benchmarks/map_scale/map_curve.json` (written by "
    "`python benchmarks/bench_map_curve.py curve`). Rounding: bytes per image and peak RSS to the unit, build "
    "time to the second, latencies to 0.01 ms, recalls and losses to 0.1 point; loss = exact search's recall on "
    "the same map minus the row's; \"process N\": only the process's cumulative peak was recorded; \"-\": not "
    "measured.*")


RELEASE_CAPTION = (
    "*Rendered by `python benchmarks/render_results.py` from each release's `config.json` (`recalls`: the released "
    "float16 copy loaded as float32; `release.fp32_recalls`: the trained float32 model; both written by `vpr "
    "release build`). Rounding: recalls to 0.01 point, as stored.*")
RELEASE_TRAINING_CAPTION = (
    "*Rendered by `python benchmarks/render_results.py` from each release's `config.json`: the best epoch and the "
    "validation R@5 of each whitening candidate as the training run recorded them (`training.best`, "
    "`training.whitening_selection`; `release.whitening_dropped`: the release ships without the chosen whitening, "
    "for the size budget of the bundled releases), the recalls as in the table above, and the size of the release "
    "folder's files. Rounding: recalls to 0.01 point, size to 0.1 MB (10^6 bytes).*")


class RenderError(ValueError):
    """A page or a JSON file does not fit the renderer: the message names the file and what to fix."""


def _num(x, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _select(rows: Sequence[Dict], key: RowKey, source: Path) -> List[Dict]:
    series, n, index, search = key
    hits = [r for r in rows if (r["series"], r["n"], r["index"]) == (series, n, index)
            and (search is None or r["search"] == search)]
    if not hits:
        raise RenderError(f"{source}: no row for series {series!r}, {n} images, index {index!r}, search {search!r}; "
                          "fix the key in render_results.TABLES or rerun the benchmark that writes the row")
    return hits


def _exact(row: Dict, rows: Sequence[Dict]) -> Optional[Dict]:
    return next((r for r in rows if (r["series"], r["n"], r["index"]) == (row["series"], row["n"], "flat")), None)


def _map_curve_line(r: Dict, rows: Sequence[Dict], with_series: bool) -> str:
    exact = _exact(r, rows)
    if r["index"] == "flat":
        loss = "(exact)"
    elif exact is None:
        loss = "-"
    else:
        loss = " / ".join(f"{exact[f'recall_{k}'] - r[f'recall_{k}']:+.1f}" for k in (1, 5, 10))
    if "row_peak_rss_mb" in r:
        rss = f"{r['row_peak_rss_mb']:,.0f} (+{r['row_peak_rss_mb'] - r['row_rss_start_mb']:,.0f})"
    elif "process_peak_rss_mb" in r:
        rss = f"process {r['process_peak_rss_mb']:,.0f}"
    else:
        rss = "-"
    cells = [r["series"]] if with_series else []
    cells += [f"{r['n']:,}", r["index"], r["factory"], r["search"], _num(r["ram_per_image"], ",.0f"),
              _num(r["disk_per_image"], ",.0f"), _num(r["build_s"], ",.0f"), _num(r["latency_ms_median"], ".2f"),
              _num(r["latency_ms_p99"], ".2f"), f"{r['recall_1']:.1f}", loss, rss]
    return "| " + " | ".join(cells) + " |"


def render_map_curve(table: MapCurveTable, rows: Sequence[Dict], source: Path = MAP_CURVE) -> str:
    head = (["series"] if table.with_series else []) + [
        "images", "index", "faiss", "search", "RAM B/image", "disk B/image", "build s", "query ms median", "p99", "R@1",
        "loss R@1 / R@5 / R@10", "peak RSS MB (+ over the build's start)"]
    align = (["---"] if table.with_series else []) + ["---:", "---", "---", "---"] + ["---:"] * 6 + ["---", "---"]
    lines = [MAP_CURVE_CAPTION, "", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for key in table.rows:
        lines += [_map_curve_line(r, rows, table.with_series) for r in _select(rows, key, source)]
    return "\n".join(lines) + "\n"


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderError(f"{path} is missing: the tables of the results pages are rendered from it") from None
    except json.JSONDecodeError as e:
        raise RenderError(f"{path} is not valid JSON ({e}); rewrite it with the script that made it") from None


def markdown_tables(text: str) -> List[List[str]]:
    """The tables of a Markdown text, each as its lines (runs of lines starting with '|')."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def render_script_table(table: ScriptTable) -> str:
    try:
        found = markdown_tables(table.source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderError(f"{table.source} is missing: rerun the benchmark script that writes it") from None
    if table.number >= len(found):
        raise RenderError(f"{table.source} holds {len(found)} tables, not table {table.number}: rerun the script "
                          "that writes it or fix the number in render_results.TABLES")
    return "\n".join([table.caption, "", *found[table.number]]) + "\n"


def _recalls(table: Dict, path: Path, split: str) -> str:
    try:
        row = table[split]
        return " / ".join(f"{row[f'R@{k}']:.2f}" for k in (1, 5, 10))
    except (KeyError, TypeError):
        raise RenderError(f"{path}: no R@1 / R@5 / R@10 for {split!r}; rebuild the release with vpr release build") \
            from None


def _whitening_choice(cfg: Dict, path: Path) -> str:
    selection = cfg.get("training", {}).get("whitening_selection")
    if not selection:
        raise RenderError(f"{path}: no training.whitening_selection; retrain with --whitening-dims or drop the release "
                          "from render_results.RELEASES")
    candidates = ", ".join(f"{c['dim'] or 'none'}: {c['R@5']:.2f}" for c in selection["candidates"])
    chosen = str(selection["chosen"] or "none")
    if cfg.get("release", {}).get("whitening_dropped"):
        chosen += " (released without it: size budget)"
    return f"{chosen} ({candidates})"


def _release_line(folder: Path, training: bool) -> str:
    path = folder / "config.json"
    cfg = _load_json(path)
    release = cfg.get("release", {})
    fp32 = release.get("fp32_recalls", {})
    recalls = [_recalls(cfg["recalls"], path, "nordland_val"), _recalls(fp32, path, "nordland_test"),
               _recalls(cfg["recalls"], path, "nordland_test"), _recalls(fp32, path, "corridor"),
               _recalls(cfg["recalls"], path, "corridor")]
    if not training:
        return f"| {cfg['architecture']} | {release.get('name', '-')} | {release.get('run', '-')} | " + \
            " | ".join(recalls) + " |"
    best = cfg.get("training", {}).get("best") or {}
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6
    return (f"| {cfg['architecture']} | {best.get('generation', '-')}, {best.get('epoch', '-')} | "
            f"{_whitening_choice(cfg, path)} | " + " | ".join(recalls) + f" | {size:.1f} MB |")


def render_releases(table: ReleaseTable) -> str:
    if table.training:
        head = [RELEASE_TRAINING_CAPTION, "",
                "| model | best epoch (gen, epoch) | whitening chosen on validation (val R@5 per candidate) | "
                "validation R@1 / R@5 / R@10 | Nordland test fp32 | Nordland test fp16 (released) | Corridor fp32 | "
                "Corridor fp16 (released) | size |", "|---|---|---|---|---|---|---|---|---|"]
    else:
        head = [RELEASE_CAPTION, "",
                "| model | release | run | validation R@1 / R@5 / R@10 | Nordland test fp32 | Nordland test released "
                "| Corridor fp32 | Corridor released |", "|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + [_release_line(folder, table.training) for folder in table.releases]) + "\n"


def _render(table, curve: Sequence[Dict]) -> str:
    if isinstance(table, MapCurveTable):
        return render_map_curve(table, curve)
    if isinstance(table, ScriptTable):
        return render_script_table(table)
    return render_releases(table)


def render_all() -> Dict[str, str]:
    """Table name -> the Markdown its source renders (caption, blank line, table)."""
    curve = _load_json(MAP_CURVE)
    return {name: _render(table, curve) for name, table in TABLES.items()}


def fill_page(text: str, rendered: Dict[str, str], page: str) -> str:
    """The page with every marked table replaced by its rendering; every table of TABLES on this page must be
    marked, and every marker must name a table."""
    seen = []

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in rendered:
            raise RenderError(f"{page}: marker 'table: {name}' names no table of render_results.TABLES")
        seen.append(name)
        return f"<!-- table: {name} -->\n{rendered[name]}<!-- /table -->"

    out = MARKER.sub(replace, text)
    wanted = [n for n, t in TABLES.items() if t.page == page]
    missing = sorted(set(wanted) - set(seen))
    if missing:
        raise RenderError(f"{page}: no '<!-- table: NAME -->' ... '<!-- /table -->' block for {missing}; add them")
    if len(seen) != len(set(seen)):
        raise RenderError(f"{page}: a table is marked twice: {sorted(seen)}")
    return out


def stale_pages(write: bool) -> List[str]:
    """The pages whose marked tables differ from their JSON's rendering (rewritten when write is true)."""
    rendered = render_all()
    stale = []
    for page in sorted({t.page for t in TABLES.values()}):
        path = PAGES / page
        text = path.read_text(encoding="utf-8")
        new = fill_page(text, rendered, page)
        if new != text:
            stale.append(page)
            if write:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page is out of date")
    a = ap.parse_args(argv)
    try:
        stale = stale_pages(write=not a.check)
    except RenderError as e:
        print(f"render_results: {e}", file=sys.stderr)
        return 2
    if a.check and stale:
        print(f"render_results: out of date: {', '.join(stale)}; run python benchmarks/render_results.py",
              file=sys.stderr)
        return 1
    print(f"rewrote {', '.join(stale)}" if stale else "every rendered table is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
