"""What the benchmark scripts leave behind: the JSON and the Markdown table rendered from it are written whole or not
at all; each script's table prints its JSON's figures (checked against figures computed here from the same inputs);
the release-bundle sizes in the committed JSON are the sizes of the release folders in the repository."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
RELEASES = (REPO / "clusvpr_plugin" / "releases" / "clusvpr_vgg16.nordland",
            REPO / "registry" / "releases" / "netvlad_vgg16.nordland",
            REPO / "registry" / "releases" / "gem_vgg16.nordland")


def _load(name: str):
    """benchmarks/NAME.py as module NAME (the scripts import their sibling _outputs by that name)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


outputs = _load("_outputs")


def _cells(line: str):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_outputs_are_the_json_and_its_table_and_a_failed_table_or_plot_replaces_nothing(tmp_path, capsys):
    out = tmp_path / "deep" / "run.json"
    outputs.write_outputs({"x": 1.5}, out, lambda r: f"| x |\n|---|\n| {r['x']} |\n")
    assert json.loads(out.read_text()) == {"x": 1.5} and out.with_suffix(".md").read_text().endswith("| 1.5 |\n")
    assert "| 1.5 |" in capsys.readouterr().out

    def broken(result):
        raise ValueError("no table")

    with pytest.raises(ValueError, match="no table"):
        outputs.write_outputs({"x": 2.5}, out, broken)
    assert json.loads(out.read_text()) == {"x": 1.5}  # the table is rendered before anything is written

    def half_plot(result, path):
        path.write_bytes(b"half")
        raise RuntimeError("plot failed")

    (tmp_path / "deep" / "run.png").write_bytes(b"earlier")
    with pytest.raises(RuntimeError, match="plot failed"):
        outputs.write_outputs({"x": 3.5}, out, lambda r: "t\n", half_plot)
    assert (tmp_path / "deep" / "run.png").read_bytes() == b"earlier"
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["run.json", "run.md", "run.png"]


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_the_committed_bundle_sizes_are_the_release_folders_and_the_table_prints_them():
    result = json.loads((BENCH / "release_bundle" / "bundle_size.json").read_text())
    today = {f.name: _folder_bytes(f) for f in RELEASES}
    assert {r["name"]: r["today"] for r in result["releases"]} == today
    assert result["today"] == sum(today.values())
    assert result["bundled"] == sum(r["bundled"] for r in result["releases"]) + result["shared_store"]
    assert result["room"] == result["today"] - result["bundled"]
    md = (BENCH / "release_bundle" / "bundle_size.md").read_text()
    rows = {_cells(line)[0]: _cells(line) for line in md.splitlines() if line.startswith("| ")}
    for name, size in today.items():
        assert rows[name][1] == f"{size / 1e6:.2f}"
    assert rows["**total**"][1:] == [f"**{result['today'] / 1e6:.2f}**", f"**{result['bundled'] / 1e6:.2f}**"]
    assert f"Bundling saves {result['room'] / 1e6:.2f} MB" in md


def test_the_aggregator_table_prints_each_variant_and_the_ratios_of_its_comparisons():
    agg = _load("bench_aggregator")
    rows = {v: {"seconds": 0.1 * (i + 1), "peak_bytes": 2**20 * 10 * (i + 1), "out_norm": 3.0, "threads": 1}
            for i, v in enumerate(agg.VARIANTS)}
    result = {"device": "cpu", "cpu": "test CPU", "torch": "x", "threads": 1, "batch": 8, "size": [30, 40],
              "repeats": 5, "rows": rows, "comparisons": agg.comparisons(rows)}
    lines = [line for line in agg.markdown(result).splitlines() if line.startswith("| ") and "---" not in line]
    by_label = {_cells(line)[0]: _cells(line) for line in lines}
    assert by_label[agg.VARIANTS["optlad_naive"]][1:] == ["200.0", "20"]
    # optlad_naive takes 0.2 s against optlad_matrix's 0.1 s, with twice its memory
    assert by_label["OptLAD aggregation"][1:] == ["2.0x", "0.500", "True"]
    assert by_label["whole aggregator vs the reference's forms"][1:] == [f"{5 / 3:.1f}x", f"{3 / 5:.3f}", "True"]


def test_the_cwt_parts_table_prints_each_pair_and_its_ratio():
    parts = _load("bench_cwt_parts")
    part = parts._part("KNN", {"a": "cdist", "b": "Gram"}, {"a": 130.5, "b": 14.2}, "a", "b", True,
                       max_rel_difference=3.5e-7)
    md = parts.markdown({"cpu": "c", "torch": "t", "threads": 1, "repeats": 7, "parts": [part]})
    row = _cells(next(line for line in md.splitlines() if line.startswith("| KNN")))
    assert row == ["KNN", "cdist: 130.5 ms", "Gram: 14.2 ms", f"{130.5 / 14.2:.1f}x", "True"]
    assert "3.5e-07" in md


def test_the_onnx_and_model_tables_print_their_rows():
    onnx = _load("bench_onnx")
    row = {"model": "gem_vgg16", "size": [192, 256], "batch": 4, "torch_img_s": 2.3, "ort_img_s": 2.69,
           "ratio": 2.69 / 2.3, "relative_error": 2.7e-7}
    md = onnx.markdown({"cpu": "c", "threads": 1, "torch": "t", "onnxruntime": "o", "rows": [row]})
    assert _cells(md.splitlines()[-1]) == ["gem_vgg16", "192x256", "4", "2.30", "2.69", "1.17", "2.7e-07"]
    model = _load("bench_model")
    result = {"device": "cpu", "torch": "t", "args": {"model": "m", "batch": 2, "size": [32, 48], "iters": 1},
              "results": {"fp32": {"images_per_s": 12.34, "ms_per_batch": 162.1, "peak_gib": float("nan"),
                                   "min_cosine_vs_fp32": 1.0},
                          "vgg16_only": {"images_per_s": 30.0, "ms_per_batch": 66.7, "peak_gib": 1.5}}}
    lines = model.markdown(result).splitlines()
    assert _cells(lines[-2]) == ["fp32", "12.3", "162.1", "-", "1.00000"]
    assert _cells(lines[-1]) == ["vgg16_only", "30.0", "66.7", "1.50", "-"]
