"""The measured results stay readable and complete: benchmarks/RESULTS.md is a short page of headline tables that
links one page per experiment under benchmarks/results/; every link resolves; every figure of the recorded figure
set (tests/data/results_figures.txt) is still printed somewhere in those pages or in the tables the map scripts
wrote; the map-scale page's tables are the rows its script rendered; and the tables benchmarks/render_results.py
renders from the benchmarks' JSON are the ones the pages print."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import List, Set

import pytest
from shared_paths import REPO

BENCH = REPO / "benchmarks"
INDEX = BENCH / "RESULTS.md"
PAGES = BENCH / "results"
FIGURES = REPO / "tests" / "data" / "results_figures.txt"
MAX_INDEX_BYTES = 25_000
# recorded figures that a hand-made table printed rounded further than its JSON; the table rendered from the JSON
# prints the JSON's digits instead, so the recorded figure counts as printed where its more precise value is
# (map-curve.md, NetVLAD 32768-d at 10^4: "3.6 / 4.6 / 6.5" ms at nprobe 16 / 64 / 256 became one row per nprobe)
MORE_PRECISE = {"4.6": "4.58"}

# a decimal figure (31.25, 3.3e-06, 2.81x) or a comma-grouped integer (1,296); not part of a version (2.14.1) or
# of a name (PQ32x8, conv5_3)
FIGURE = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?:e[-+]?\d+)?(?:x(?!\w))?(?!\w|\.\d|,\d)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PAGE_LINK = re.compile(r"\]\((results/[\w.-]+\.md)\)")
# "section N" of a results file, as prose outside the results pages may say it; the pages have names now
SECTION_REFERENCE = re.compile(r"RESULTS(?:\.md)?`?\)?,? \(?sections? \d", re.I)


def figures(text: str) -> Set[str]:
    return set(FIGURE.findall(text))


def _table_rows(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]


def _pages() -> List[Path]:
    return sorted(PAGES.glob("*.md"))


def test_the_figure_pattern_takes_figures_and_leaves_versions_and_names():
    text = ("R@1 31.25 (12.00 / 27.50), 2.81x at 480x640, 1,296 B, 3.3e-6 and 6.44e+08; torch 2.14.1, "
            "IVF1024,PQ32x8, conv5_3, 10^6, lr 3e-5, 0.9 points. 1.15-1.32x")
    assert figures(text) == {"31.25", "12.00", "27.50", "2.81x", "1,296", "3.3e-6", "6.44e+08", "0.9", "1.15",
                             "1.32x"}


def test_the_index_is_short():
    size = INDEX.stat().st_size
    assert size <= MAX_INDEX_BYTES, (
        f"benchmarks/RESULTS.md is {size} bytes (at most {MAX_INDEX_BYTES}): move the experiment's text and tables to "
        f"its page under benchmarks/results/ and keep one line linking it")


def test_the_index_links_every_experiment_page_and_each_page_links_back():
    linked = PAGE_LINK.findall(INDEX.read_text(encoding="utf-8"))
    pages = [p.relative_to(BENCH).as_posix() for p in _pages()]
    assert pages, "benchmarks/results/ holds no page"
    assert sorted(set(linked)) == pages, "RESULTS.md links every page of benchmarks/results/, and only those"
    for page in _pages():
        assert "](../RESULTS.md)" in page.read_text(encoding="utf-8"), f"{page.name} does not link RESULTS.md"


def test_every_relative_link_and_image_of_the_results_pages_resolves():
    broken = []
    for doc in [INDEX, *_pages()]:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.is_file():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert broken == []


def test_every_recorded_figure_is_still_printed():
    recorded = {line.strip() for line in FIGURES.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    assert {"31.25", "2.81x", "1,296", "3.3e-6"} <= recorded and len(recorded) > 1000  # the set is the real one
    docs = [INDEX, *_pages(), *sorted((BENCH / "map_scale").glob("*.md"))]
    printed = set().union(*(figures(d.read_text(encoding="utf-8")) for d in docs))
    for rounded, precise in MORE_PRECISE.items():
        decimals = len(rounded.split(".")[1])
        assert f"{float(precise):.{decimals}f}" == rounded and len(precise) > len(rounded), (rounded, precise)
        if precise in printed:
            printed.add(rounded)
    lost = sorted(recorded - printed)
    assert lost == [], (
        f"{len(lost)} figures of {FIGURES.relative_to(REPO)} appear in no results page: {lost[:40]}; put them back, "
        "or remove a figure from that file when a new measurement replaced it on purpose")


def test_the_map_scale_page_prints_the_tables_its_script_rendered():
    page = (PAGES / "map-scale.md").read_text(encoding="utf-8")
    for rendered in ("map_scale.md", "reductions.md"):
        rows = _table_rows((BENCH / "map_scale" / rendered).read_text(encoding="utf-8"))
        assert rows and [r for r in rows if r not in page] == [], f"map-scale.md differs from map_scale/{rendered}"


def test_pages_built_from_a_script_json_name_the_command_that_wrote_it():
    for name, output in (("map-scale.md", "map_scale.json"), ("map-curve.md", "map_curve.json"),
                         ("inference-runtimes.md", "int8_levers.jsonl")):
        text = (PAGES / name).read_text(encoding="utf-8")
        script = {"map_scale.json": "bench_map_scale.py", "map_curve.json": "bench_map_curve.py",
                  "int8_levers.jsonl": "bench_int8_levers.py"}[output]
        assert output in text and f"python benchmarks/{script}" in text, f"{name}: which command wrote {output}?"


def test_the_docs_point_at_pages_not_at_numbered_sections():
    docs = [REPO / "README.md", REPO / "registry" / "data" / "MODEL_CARD.md", *sorted((REPO / "docs").glob("*.md")),
            *sorted(BENCH.glob("*.sh")), BENCH / "int8_levers.jsonl", BENCH / "bench_map_curve.py",
            BENCH / "bench_map_scale.py"]
    stale = {str(d.relative_to(REPO)): SECTION_REFERENCE.findall(d.read_text(encoding="utf-8")) for d in docs}
    assert {d: refs for d, refs in stale.items() if refs} == {}


def _renderer():
    """benchmarks/render_results.py, loaded from its file once (its dataclasses need it in sys.modules)."""
    if "render_results" not in sys.modules:
        spec = importlib.util.spec_from_file_location("render_results", BENCH / "render_results.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["render_results"] = module
        spec.loader.exec_module(module)
    return sys.modules["render_results"]


def test_every_rendered_table_of_the_pages_is_what_its_json_renders():
    assert _renderer().stale_pages(write=False) == [], (
        "a results page differs from the tables its JSON renders: run python benchmarks/render_results.py")


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_the_rendered_map_curve_rows_hold_the_json_values():
    # read back from the page, independently of the renderer: each row's numbers match the JSON row of its key
    rows = json.loads((BENCH / "map_scale" / "map_curve.json").read_text(encoding="utf-8"))
    by_key = {(r["series"], r["n"], r["index"], r["search"]): r for r in rows}
    page = (PAGES / "map-curve.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- table: (map_curve/[\w.-]+) -->\n(.*?)<!-- /table -->", page, re.S)
    assert len(blocks) == 6
    checked = 0
    for name, body in blocks:
        head, *lines = _table_rows(body)
        cols = _cells(head)
        series = None if "series" in cols else {
            "map_curve/1e6-projected": "ClusVPR whitened-256, projected distractors",
            "map_curve/1e7-1024-lists": "ClusVPR whitened-256, projected distractors",
            "map_curve/1e7-4096-lists": "ClusVPR whitened-256, projected distractors",
            "map_curve/netvlad-whitened": "NetVLAD whitened-256, projected distractors",
            "map_curve/netvlad-32768": "NetVLAD 32768"}[name]
        for line in lines:
            cell = dict(zip(cols, _cells(line)))
            r = by_key[(cell.get("series", series), int(cell["images"].replace(",", "")), cell["index"],
                        cell["search"])]
            assert abs(float(cell["R@1"]) - r["recall_1"]) <= 0.05 + 1e-9
            if cell["query ms median"] != "-":
                assert abs(float(cell["query ms median"]) - r["latency_ms_median"]) <= 0.005 + 1e-9
            if cell["RAM B/image"] != "-":
                assert abs(float(cell["RAM B/image"].replace(",", "")) - r["ram_per_image"]) <= 0.5 + 1e-9
            flat = by_key[(r["series"], r["n"], "flat", "")]
            if r["index"] != "flat":
                losses = [float(x) for x in cell["loss R@1 / R@5 / R@10"].split(" / ")]
                want = [flat[f"recall_{k}"] - r[f"recall_{k}"] for k in (1, 5, 10)]
                assert all(abs(a - b) <= 0.05 + 1e-9 for a, b in zip(losses, want)), (name, line)
            checked += 1
    assert checked >= 60


def test_the_check_finds_a_changed_figure_and_a_missing_marker(tmp_path, monkeypatch):
    render = _renderer()
    page = (PAGES / "map-curve.md").read_text(encoding="utf-8")
    assert "| 13.3 | (exact) |" in page
    monkeypatch.setattr(render, "PAGES", tmp_path)
    for other in _pages():
        (tmp_path / other.name).write_text(other.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "map-curve.md").write_text(page.replace("| 13.3 | (exact) |", "| 13.4 | (exact) |", 1),
                                           encoding="utf-8")
    assert render.main(["--check"]) == 1
    assert render.main([]) == 0 and (tmp_path / "map-curve.md").read_text(encoding="utf-8") == page
    assert render.main(["--check"]) == 0
    (tmp_path / "map-curve.md").write_text(page.replace("<!-- table: map_curve/1e5 -->", "", 1), encoding="utf-8")
    with pytest.raises(render.RenderError, match="map_curve/1e5"):
        render.stale_pages(write=False)
    assert render.main(["--check"]) == 2


def test_a_page_with_tables_not_rendered_from_json_says_they_were_recorded_by_hand():
    unsaid = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        outside = re.sub(r"<!-- table: [\w/.-]+ -->\n.*?<!-- /table -->", "", text, flags=re.S)
        has_table = any(line.startswith("|---") for line in outside.splitlines())  # a header's rule line
        if has_table and "recorded by hand" not in " ".join(outside.lower().split()):
            unsaid.append(page.name)
    assert unsaid == [], f"{unsaid}: say which runs these tables were recorded by hand from, or render them"


def test_the_releases_recalls_are_the_config_json_ones_in_both_tables():
    text = (PAGES / "releases.md").read_text(encoding="utf-8")
    rendered = re.search(r"<!-- table: releases/recalls -->\n(.*?)<!-- /table -->", text, re.S).group(1)
    head, *rows = _table_rows(rendered)
    by_model = {_cells(r)[0]: dict(zip(_cells(head), _cells(r))) for r in rows}
    assert sorted(by_model) == ["clusvpr_vgg16", "gem_vgg16", "netvlad_vgg16"]
    hand, headline = {}, {}
    for table, rows_text in ((hand, text.replace(rendered, "")), (headline, INDEX.read_text(encoding="utf-8"))):
        for row in _table_rows(rows_text):
            cells = _cells(row)
            if cells[0] in by_model and len(cells) == 9:
                table[cells[0]] = cells[3:8]
    assert sorted(hand) == sorted(headline) == sorted(by_model)
    for folder in (REPO / "clusvpr_plugin" / "releases", REPO / "registry" / "releases"):
        for config in sorted(folder.glob("*/config.json")):
            cfg = json.loads(config.read_text(encoding="utf-8"))
            fp32, released = cfg["release"]["fp32_recalls"], cfg["recalls"]
            want = [released["nordland_val"], fp32["nordland_test"], released["nordland_test"], fp32["corridor"],
                    released["corridor"]]
            row = by_model[cfg["architecture"]]
            got = [row[c] for c in ("validation R@1 / R@5 / R@10", "Nordland test fp32", "Nordland test released",
                                    "Corridor fp32", "Corridor released")]
            for cell, split in zip(got, want):
                assert [float(x) for x in cell.split(" / ")] == [split["R@1"], split["R@5"], split["R@10"]]
            assert got == hand[cfg["architecture"]], f"releases.md: the two tables disagree on {cfg['architecture']}"
            assert got == headline[cfg["architecture"]], f"RESULTS.md's releases table: {cfg['architecture']}"


def test_the_release_training_table_is_what_each_config_json_and_folder_hold():
    text = (PAGES / "releases.md").read_text(encoding="utf-8")
    rendered = re.search(r"<!-- table: releases/training -->\n(.*?)<!-- /table -->", text, re.S).group(1)
    head, *rows = _table_rows(rendered)
    by_model = {_cells(r)[0]: dict(zip(_cells(head), _cells(r))) for r in rows}
    folders = [*(REPO / "clusvpr_plugin" / "releases").glob("*/config.json"),
               *(REPO / "registry" / "releases").glob("*/config.json")]
    assert sorted(by_model) == sorted(json.loads(c.read_text())["architecture"] for c in folders)
    for config in folders:
        cfg = json.loads(config.read_text(encoding="utf-8"))
        row = by_model[cfg["architecture"]]
        best = cfg["training"]["best"]
        assert row["best epoch (gen, epoch)"] == f"{best['generation']}, {best['epoch']}"
        size = sum(p.stat().st_size for p in config.parent.iterdir() if p.is_file())
        assert abs(float(row["size"].removesuffix(" MB")) - size / 1e6) <= 0.05 + 1e-9
        choice = row["whitening chosen on validation (val R@5 per candidate)"]
        selection = cfg["training"]["whitening_selection"]
        for c in selection["candidates"]:
            assert f"{c['dim'] or 'none'}: {c['R@5']:.2f}" in choice
        assert choice.startswith(str(selection["chosen"] or "none"))
        assert ("released without it" in choice) == ("whitening_dropped" in cfg["release"])
