"""benchmarks/untrained_start.py: the untrained start is set up from each release's own recorded training command
(only the machine's paths, the output folder and the cache swapped), and its table flags where a release is worse."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    """benchmarks/NAME.py as module NAME (the script imports its sibling _outputs by that name)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


_load("_outputs")
start = _load("untrained_start")


def test_the_start_is_the_release_commands_run_with_this_machines_paths(tmp_path):
    from registry.cli.train import build_parser, check_args, model_overrides

    weights = tmp_path / "vgg.safetensors"
    weights.write_bytes(b"")  # check_args only looks for the file
    (tmp_path / "data").mkdir()
    for release in start.RELEASES:
        command = json.loads((release / "config.json").read_text())["release"]["command"]
        argv = start.start_argv(command, str(tmp_path / "data"), str(weights), str(tmp_path / "o"), 1)
        recorded = build_parser().parse_args(command.split()[2:])
        a = build_parser().parse_args(argv)
        check_args(a)
        assert a.cache_features is None and a.test_set == [] and a.output == str(tmp_path / "o")
        assert a.data_root == str(tmp_path / "data") and a.backbone_weights == str(weights) and a.threads == 1
        # every option that shapes the model, its seed or its k-means is the recorded run's
        for name in ("model", "model_arg", "input_size", "seed", "init_seed", "cluster_seed", "cluster_descriptors",
                     "cluster_per_image", "train_set", "train_layers", "whitening_dims"):
            assert getattr(a, name) == getattr(recorded, name), (release.name, name)
        assert {k: v for k, v in model_overrides(a).items() if k != "backbone_weights"} == \
            {k: v for k, v in model_overrides(recorded).items() if k != "backbone_weights"}


def test_the_table_flags_every_recall_where_the_release_is_below_its_start():
    row = {"R@1": 10.0, "R@5": 30.0, "R@10": 40.0}
    worse = {"R@1": 9.0, "R@5": 30.0, "R@10": 41.0}
    result = {"models": [{"architecture": "netvlad_vgg16", "start": {"corridor": row, "gardens_point": row},
                          "released": {"corridor": worse, "gardens_point": row},
                          "release_source": {"corridor": "config.json", "gardens_point": "measured"},
                          "stored": {"corridor": worse}, "start_validation": {"nordland_val": row}}]}
    text = start.markdown(result)
    assert ("| netvlad_vgg16 | corridor | 10.00 / 30.00 / 40.00 | 9.00 / 30.00 / 41.00 | -1.00 / +0.00 / +1.00 | "
            "R@1 | config.json |") in text
    assert "| netvlad_vgg16 | gardens_point | 10.00 / 30.00 / 40.00 | 10.00 / 30.00 / 40.00 | +0.00 / +0.00 / +0.00 " \
           "| - | measured here |" in text
    assert "| netvlad_vgg16 | nordland_val: 10.00 / 30.00 / 40.00 |" in text


def test_update_replaces_only_the_named_releases_entries_and_refuses_unknown_ones(tmp_path):
    mod = start
    out = tmp_path / "start.json"
    old = [{"release": name, "seconds": 10.0, "start": {"corridor": {"R@1": 1.0}}} for name in ("a.x", "b.x", "c.x")]
    out.write_text(json.dumps({"datasets": ["corridor"], "models": old, "seconds": 30.0}))
    previous = mod._previous(out, {"b.x"})
    new = {"release": "b.x", "seconds": 4.0, "start": {"corridor": {"R@1": 2.0}}}
    merged = mod._merged(previous, [new])
    assert [m["release"] for m in merged["models"]] == ["a.x", "b.x", "c.x"]
    assert merged["models"][1] == new and merged["models"][0] == old[0] and merged["models"][2] == old[2]
    assert merged["seconds"] == 24.0 and merged["updated"] == ["b.x"]
    with pytest.raises(SystemExit, match="no entry for \\['z.x'\\]"):
        mod._previous(out, {"z.x"})
    with pytest.raises(SystemExit, match="name them"):
        mod._previous(out, set())
    with pytest.raises(SystemExit, match="needs the recorded"):
        mod._previous(tmp_path / "none.json", {"b.x"})
