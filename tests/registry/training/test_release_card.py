"""`vpr release build`'s card of a run that stopped early: its training budget and validation curve equal what the
run's train/log.jsonl and summary.json hold, and its weaknesses section compares the release with the untrained start
of the file given, marking every cell where the release is worse."""
from __future__ import annotations

import json
import re

import pytest
import tiny_vpr
from test_train_cli import _args  # the training tests' own module (on sys.path, as tiny_vpr is)

import registry
from registry.cli import release as release_cli
from registry.cli import train as train_cli
from registry.datasets import load_dataset
from registry.evaluation.recall_table import recall_table
from registry.training import release, run_record

NS = ("R@1", "R@5", "R@10")
PATIENCE, GEN0_EPOCHS, EPOCHS = 1, 2, 4


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("traversals")
    return {name: tiny_vpr.write_traversal(base / name, places=places, seed=seed)
            for name, places, seed in (("train", 16, 0), ("val", 12, 1), ("unseen", 10, 7))}


@pytest.fixture(scope="module")
def patience_run(roots, tmp_path_factory):
    """tiny ClusVPR, 2 generations of at most 2 + 4 epochs, early stopping with patience 1."""
    out = tmp_path_factory.mktemp("runs") / "tiny_clusvpr_seed0"
    argv = _args((roots["train"], roots["val"]), out, "--generations", "2", "--gen0-epochs", str(GEN0_EPOCHS),
                 "--epochs", str(EPOCHS), "--patience", str(PATIENCE), "--temperatures", "0.1", "0.07",
                 "--test-set", f"aligned:{roots['train']}")
    argv[argv.index("tiny_netvlad")] = "tiny_clusvpr"
    assert train_cli.main(argv) == 0
    return out


@pytest.fixture
def sets(roots, monkeypatch):
    val, train = f"aligned:{roots['val']}", f"aligned:{roots['train']}"
    monkeypatch.setattr(release, "VAL_SET", val)
    monkeypatch.setattr(release, "TEST_SETS", (train,))
    monkeypatch.setattr(release, "PROTOCOL", {val: {"data": "val"}, train: {"data": "train"}})
    # an untrained-start file names datasets as recall tables do (a folder's name), or by a spec to load
    return {"val": val, "train": train, "val_name": "val", "train_name": "train",
            "unseen": f"aligned:{roots['unseen']}"}


def _log(run):
    return [json.loads(line) for line in (run / "train" / "log.jsonl").read_text().splitlines()]


def _section(card: str, title: str) -> str:
    match = re.search(rf"\n## {re.escape(title)}\n(.*?)\n## ", card, re.S)
    assert match, f"the card has no section {title!r}"
    return match.group(1)


def _table(text: str):
    """The rows of the first Markdown table in `text`, as lists of cells (header and rule dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def _build(run, out, *extra):
    assert release_cli.main(["build", "--runs", str(run), "--tag", "demo", "--out-dir", str(out), *extra]) == 0
    folder = out / "tiny_clusvpr.demo"
    return json.loads((folder / "config.json").read_text()), (folder / "README.md").read_text(), folder


def test_the_card_states_the_budget_and_the_curve_the_log_holds(patience_run, sets, tmp_path, capsys):
    config, card, _ = _build(patience_run, tmp_path / "out")
    log = _log(patience_run)
    summary = json.loads((patience_run / "train" / "summary.json").read_text())
    section = _section(card, "Training budget and validation curve")
    # the stopping rule and, per generation, the epochs trained and why it ended, read from the log alone
    assert (f"early stopping with patience {PATIENCE}: a generation ends after 1 epoch in a row without a better "
            f"validation R@5 than the best so far, or at its maximum; 2 generations of at most {GEN0_EPOCHS} + 1 x "
            f"{EPOCHS} epochs") in section
    stopped_by_patience = 0
    for generation, most in ((0, GEN0_EPOCHS), (1, EPOCHS)):
        own = [r for r in log if r["generation"] == generation and r["epoch"] > 0]
        if len(own) == most:
            why = "its maximum reached"
        else:
            assert [r["best"] for r in own[-PATIENCE:]] == [False] * PATIENCE  # the trainer stopped it early
            why, stopped_by_patience = "patience reached: 1 epoch without a better validation R@5", 1
        assert f"generation {generation}: {len(own)} of at most {most} ({why})" in section
    assert stopped_by_patience, "the run should exercise early stopping"
    trained = sum(1 for r in log if r["epoch"] > 0)
    assert f"; {trained} in all" in section
    best = summary["best"]
    assert (f"- Epoch chosen: generation {best['generation']}, epoch {best['epoch']}, the best validation R@5 of "
            "the run (R@1 / R@5 / R@10: " + " / ".join(f"{best['recalls'][n]:.2f}" for n in NS) + ")") in section
    hours = summary["train_seconds"] / 3600
    assert f"training with validation {hours:.2f} h ({summary['train_seconds']:.0f} s)" in section
    assert f"pyramid: 2 generations (at most {GEN0_EPOCHS} + 1 x {EPOCHS} epochs) with early stopping (patience " \
           f"{PATIENCE})" in card
    assert "CPU time not recorded" in section
    # every logged epoch is a row of the table, with the log's values
    rows = _table(section)
    assert [(int(r[0]), int(r[1])) for r in rows] == [(r["generation"], r["epoch"]) for r in log]
    assert [r[2:5] for r in rows] == [[f"{rec[f'val_{n}']:.2f}" for n in NS] for rec in log]
    marks = [r[5] for r in rows]
    chosen = [(r["generation"], r["epoch"]) for r in log].index((best["generation"], best["epoch"]))
    assert marks[chosen] == "**chosen**" and marks.count("**chosen**") == 1 and marks[0] == "start"
    assert [m == "*better*" for i, m in enumerate(marks) if i not in (0, chosen)] == [
        r["best"] for i, r in enumerate(log) if i not in (0, chosen)]
    # config.json's release facts hold the same curve, for results pages
    curve = config["release"]["validation_curve"]
    assert curve["epochs"] == len(log) and curve["points"] == [
        {"generation": r["generation"], "epoch": r["epoch"], "best": r["best"],
         **{n: r[f"val_{n}"] for n in NS}} for r in log]
    assert config["release"]["budget"]["epochs_trained"] == trained
    # the selection line stays with the provenance
    assert f"- Selection: validation R@5 on {sets['val']} among seeds 0: {summary['final_val']['R@5']:.2f}" in card
    capsys.readouterr()


def test_without_an_untrained_start_file_the_card_says_the_comparison_was_not_given(patience_run, sets, tmp_path):
    config, card, _ = _build(patience_run, tmp_path / "out")
    section = _section(card, "Where it is weak")
    trained_on = config["release"]["trained_on"]
    assert f"**Domains it has not seen:** any but its training data ({trained_on}). It is not {release.NOT_FOR}." \
        in section
    assert "was not given for these weights (`vpr release build --untrained-start FILE`" in section
    assert "untrained_start" not in config["release"] and "->" not in section


def test_the_release_against_its_untrained_start_marks_every_worse_cell(patience_run, sets, tmp_path):
    # a start that beats any release below R@1 100 on validation, and one no release can be below elsewhere
    start = {sets["val_name"]: {"R@1": 100.0, "R@5": 0.0, "R@10": 0.0},
             sets["train_name"]: {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0},
             sets["unseen"]: {"R@1": 12.5, "R@5": 0.0, "R@10": 0.0}}
    file = tmp_path / "start.json"
    file.write_text(json.dumps({"command": "python benchmarks/untrained_start.py --only tiny", "datasets": list(start),
                                "models": [{"release": "tiny_clusvpr.old", "architecture": "tiny_clusvpr",
                                            "start_command": "vpr train ...", "start": start}]}))
    config, card, folder = _build(patience_run, tmp_path / "out", "--untrained-start", str(file))
    stored = registry.VPRModel.from_pretrained(str(folder))
    unseen = recall_table(stored, [load_dataset(sets["unseen"])], progress=False)["unseen"]
    release_rows = {**config["recalls"], sets["unseen"]: unseen}  # the unseen set is measured by the build
    assert release_rows[sets["val_name"]]["R@1"] < 100.0
    section = _section(card, "Where it is weak")
    assert "built and measured by `python benchmarks/untrained_start.py --only tiny` from the recorded training " \
           "command of `tiny_clusvpr.old`" in section
    rows = {r[0]: r[1:] for r in _table(section)}
    assert list(rows) == list(start)
    worse = {}
    for dataset, cells in rows.items():
        for n, cell in zip(NS, cells):
            plain = f"{start[dataset][n]:.2f} -> {release_rows[dataset][n]:.2f}"
            below = release_rows[dataset][n] < start[dataset][n]
            assert cell == (f"**{plain} (worse)**" if below else plain), (dataset, n)
            if below:
                worse.setdefault(dataset, []).append(n)
    assert worse.get(sets["val_name"]) == ["R@1"]
    named = "; ".join(f"{d} ({', '.join(ns)})" for d, ns in worse.items())
    assert f"**Worse than its untrained start on: {named}.**" in section
    assert rows[sets["unseen"]][-1] == "measured on the stored weights by `vpr release build`"
    assert config["release"]["untrained_start"]["worse"] == worse


def test_a_file_without_the_models_start_says_so_and_a_bad_file_is_refused(patience_run, sets, tmp_path, capsys):
    file = tmp_path / "start.json"
    file.write_text(json.dumps({"command": "c", "models": [{"architecture": "other", "start": {}}]}))
    _, card, _ = _build(patience_run, tmp_path / "out", "--untrained-start", str(file))
    assert "holds no start of `tiny_clusvpr`: not compared with its start." in _section(card, "Where it is weak")
    file.write_text(json.dumps({"models": [{"architecture": "tiny_clusvpr", "start": {"x": {"R@1": 1.0}}}]}))
    with pytest.raises(release.ReleaseError, match=r"models\[0\] \(tiny_clusvpr\) start on x lacks one of R@1"):
        release.build([patience_run], "demo", out_dir=tmp_path / "out", untrained_start=file)
    assert release_cli.main(["build", "--runs", str(patience_run), "--untrained-start", str(tmp_path / "no.json"),
                             "--out-dir", str(tmp_path / "out")]) == 1
    assert "no such file; run python benchmarks/untrained_start.py" in capsys.readouterr().err


def test_a_long_curve_is_bounded_keeping_the_start_the_chosen_epoch_and_each_generations_last():
    history = [{"generation": 0, "epoch": 0, "val_R@5": 1.0, "best": True}]
    history += [{"generation": g, "epoch": e, "val_R@5": float(e), "best": False}
                for g in range(3) for e in range(1, 401)]
    curve = run_record.validation_curve(history, {"generation": 1, "epoch": 123}, bound=50)
    kept = [(p["generation"], p["epoch"]) for p in curve["points"]]
    assert curve["epochs"] == len(history) and 40 <= len(kept) <= 50 and kept == sorted(kept)
    assert {(0, 0), (1, 123), (0, 400), (1, 400), (2, 400)} <= set(kept)
    index = [history.index(next(r for r in history if (r["generation"], r["epoch"]) == k)) for k in kept]
    assert max(b - a for a, b in zip(index, index[1:])) <= 2 * len(history) / 45  # evenly spread, no long gap
    assert len(run_record.validation_curve(history[:30], {})["points"]) == 30  # short curves keep every epoch
