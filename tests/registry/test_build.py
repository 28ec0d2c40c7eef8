"""Model arguments are checked against their documented ranges before anything is built: from a caller and from a
config.json (the one layout file without a sha256)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import registry
from registry.hub import WrongModelError

SMALL = {"input_size": (64, 96), "whitening_dim": None}


@pytest.fixture(scope="module")
def saved_netvlad(tmp_path_factory) -> Path:
    """A NetVLAD (VGG16, 64 clusters, no whitening) saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("netvlad") / "model"
    registry.create("netvlad_vgg16", **SMALL).save_pretrained(folder)
    return folder


def _with_model_args(saved: Path, target: Path, **model_args) -> Path:
    """A copy of the saved layout (hard links) whose config.json sets `model_args`."""
    target.mkdir()
    for path in saved.iterdir():
        os.link(path, target / path.name)
    config = json.loads((saved / "config.json").read_text())
    config["model_args"].update(model_args)
    (target / "config.json").unlink()
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("value", [1e7, 200000, 10_000_000, 0, -3, "64", 64.0, True])
def test_a_config_num_clusters_outside_its_range_names_the_field_the_range_and_the_file(saved_netvlad, tmp_path,
                                                                                        value):
    folder = _with_model_args(saved_netvlad, tmp_path / "m", num_clusters=value)
    with pytest.raises(WrongModelError, match=rf"config.json of {folder}, model_args: num_clusters = .* is outside "
                                              r"its documented range: it must be an integer in 1\.\.1024"):
        registry.create("netvlad_vgg16", pretrained=folder)


@pytest.mark.parametrize("key,value,expected", [
    ("input_size", [-5, 64], r"2 integers in 16\.\.8192"),
    ("input_size", [0, 0], r"2 integers in 16\.\.8192"),
    ("input_size", [64, 96, 3], r"2 integers in 16\.\.8192"),
    ("input_size", [100000, 96], r"2 integers in 16\.\.8192"),
    ("whitening_dim", 1e9, r"an integer in 1\.\.65536, or None"),
    ("std", [0, 1, 1], r"3 finite numbers in 1e-06\.\.1000"),
    ("mean", [float("nan"), 0, 0], r"3 finite numbers in -1000\.\.1000"),
])
def test_a_config_shape_argument_outside_its_range_is_refused_before_building(saved_netvlad, tmp_path, key, value,
                                                                              expected):
    folder = _with_model_args(saved_netvlad, tmp_path / "m", **{key: value})
    with pytest.raises(WrongModelError, match=rf"model_args: {key} = .* it must be {expected}"):
        registry.VPRModel.from_pretrained(folder)


def test_a_huge_num_clusters_in_a_config_is_refused_before_any_allocation(saved_netvlad, tmp_path):
    """Before the range check the NetVLAD was built before any weight was read: 2 x K x 512 float32 values, 0.8 GB
    for K = 2e5 and 41 GB for 1e7. Now neither allocates."""
    folders = [str(_with_model_args(saved_netvlad, tmp_path / name, num_clusters=value))
               for name, value in (("e7", 1e7), ("e5", 200000))]
    script = textwrap.dedent(f"""
        import json, resource
        import registry
        from registry.hub import WrongModelError
        registry.create("gem_vgg16", input_size=(64, 96))  # warm up: torch's allocator, the registry, a backbone
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        errors = []
        for folder in {folders!r}:
            try:
                registry.create("netvlad_vgg16", pretrained=folder)
            except WrongModelError as err:
                errors.append(str(err))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"grown_kib": grown, "errors": errors}}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         cwd=Path(registry.__file__).parents[1])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["errors"]) == 2 and all("num_clusters" in e for e in result["errors"])
    assert result["grown_kib"] < 32 * 1024  # peak RSS grew by less than 32 MiB


@pytest.mark.parametrize("name,override,expected", [
    ("netvlad_vgg16", {"num_clusters": 200000}, r"num_clusters = 200000 .* an integer in 1\.\.1024"),
    ("gem_vgg16", {"input_size": (-5, 64)}, r"input_size = \(-5, 64\) .* 2 integers in 16\.\.8192"),
    ("clusvpr_vgg16", {"input_size": (0, 64)}, r"input_size = \(0, 64\) .* 2 integers in 32\.\.8192"),
    ("gem_vgg16", {"p": float("nan")}, r"p = nan .* a finite number in 0\.1\.\.100"),
    ("clusvpr_vgg16", {"knn_k": 0}, r"knn_k = 0 .* an integer in 1\.\.256"),
    ("clusvpr_vgg16", {"cwt_depth": 1000}, r"cwt_depth = 1000 .* an integer in 0\.\.32"),
])
def test_an_argument_outside_its_range_is_refused_at_creation_with_the_range(name, override, expected):
    with pytest.raises(ValueError, match=rf"{name} argument: {expected}"):
        registry.create(name, **override)


def test_a_number_the_model_declares_no_range_for_is_still_bounded():
    from registry._util.ranges import UNDECLARED, check_args

    with pytest.raises(ValueError, match=r"width = 1e\+30 .* a finite number in -1\.04858e\+06\.\.1\.04858e\+06"):
        check_args({"width": 1e30}, {}, "a plugin", "fix it")
    check_args({"width": UNDECLARED.hi, "name": "x", "flag": True, "none": None}, {}, "a plugin", "fix it")


def test_a_config_format_version_that_is_not_a_number_names_the_file_and_the_field(saved_netvlad, tmp_path):
    folder = _with_model_args(saved_netvlad, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = "abc"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WrongModelError, match=rf"config.json of {folder}: format_version = 'abc' is not a layout "
                                              r"format version \(a whole number >= 1; this version of the zoo "
                                              r"writes 1\)"):
        registry.create("netvlad_vgg16", pretrained=folder)


def _tampered_copy(saved: Path, target: Path, name: str, write) -> Path:
    """A copy of the saved layout whose file `name` is rewritten by `write(path)`, with config.json's sha256 and
    size for it recomputed: a NaN that the checksum cannot catch."""
    from registry._util.files import sha256_file

    target.mkdir()
    for path in saved.iterdir():
        if path.name != name:
            os.link(path, target / path.name)
    write(target / name)
    config = json.loads((saved / "config.json").read_text())
    config["files"][name] = {"sha256": sha256_file(target / name), "size": (target / name).stat().st_size}
    (target / "config.json").unlink()
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_weights_with_a_matching_sha256_are_refused_naming_the_file_and_the_tensor(saved_netvlad, tmp_path,
                                                                                              value):
    from safetensors.torch import load_file, save_file

    def poison(path: Path) -> None:
        state = load_file(str(saved_netvlad / "model.safetensors"))
        state["aggregator.centroids"][3, 7] = value
        save_file(state, str(path))

    folder = _tampered_copy(saved_netvlad, tmp_path / "m", "model.safetensors", poison)
    with pytest.raises(registry.NonFiniteValuesError,
                       match=rf"model.safetensors of {folder} holds NaN or Inf values in 1 tensor\(s\): "
                             r"aggregator.centroids \(1 of 32768 values\)"):
        registry.create("netvlad_vgg16", pretrained=folder)
