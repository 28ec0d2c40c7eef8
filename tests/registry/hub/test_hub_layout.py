"""save_pretrained / from_pretrained with local folders: the layout, checksums, atomic writes, strict loading."""
from __future__ import annotations

import hashlib
import json
import os

import h5py
import numpy as np
import pytest
import torch

import registry
import registry.hub as hub

from .helpers import outputs


def test_save_writes_the_layout_with_a_sha256_of_every_file(tiny, tmp_path):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    names = sorted(os.listdir(folder))
    assert names == ["README.md", "centroids.h5", "config.json", "model.safetensors", "pca.h5"]
    config = json.loads((folder / "config.json").read_text())
    assert sorted(config["files"]) == ["README.md", "centroids.h5", "model.safetensors", "pca.h5"]
    for name, info in config["files"].items():
        data = (folder / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_the_saved_folder_and_its_files_get_the_modes_the_umask_gives(tiny, tmp_path, mask):
    import stat

    model, _ = tiny
    old = os.umask(mask)
    try:
        folder = hub.save_pretrained(model, tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o666 & ~mask}


def test_config_is_timm_compatible_and_states_the_vpr_facts(tiny, tmp_path):
    model, _ = tiny
    config = json.loads((hub.save_pretrained(model, tmp_path / "m") / "config.json").read_text())
    assert config["architecture"] == model.name
    assert isinstance(config["model_args"], dict) and isinstance(config["pretrained_cfg"], dict)
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert "hf_hub_id" not in config["pretrained_cfg"]  # where weights live is not a fact of the weights
    assert (config["backbone"], config["aggregator"]) == ("hubtest_tiny", "netvlad")
    assert config["descriptor_dim"] == config["num_features"] == 8
    assert config["whitening"] == {"in_dim": 64, "out_dim": 8, "fitted": True}


def test_local_folder_round_trip_gives_identical_descriptors(tiny, tmp_path):
    model, images = tiny
    folder = model.save_pretrained(tmp_path / "m")
    loaded = registry.VPRModel.from_pretrained(str(folder))
    assert torch.equal(outputs(model, images), outputs(loaded, images))
    assert loaded.whitening.fitted and not loaded.training


def test_registry_create_accepts_a_folder(tiny, tmp_path, tiny_model_name):
    model, images = tiny
    folder = model.save_pretrained(tmp_path / "m")
    loaded = registry.create(tiny_model_name, pretrained=str(folder))
    assert torch.equal(outputs(model, images), outputs(loaded, images))


def test_failed_save_leaves_no_folder_and_no_temp_files(tiny, tmp_path, monkeypatch):
    model, _ = tiny

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(registry._util.h5io, "save_centroids", broken)
    with pytest.raises(OSError, match="disk full"):
        hub.save_pretrained(model, tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_failed_resave_keeps_the_previous_layout_intact(tiny, tmp_path, monkeypatch):
    model, images = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(registry._util.h5io, "save_centroids",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with torch.no_grad():
        model.aggregator.centroids.add_(1.0)
    with pytest.raises(OSError):
        hub.save_pretrained(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_a_resave_past_the_file_size_limit_names_the_folder_and_keeps_the_previous_layout(tmp_path):
    from real_faults import write_under_limit

    folder = registry.create("gem_vgg16", input_size=(64, 64)).save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = write_under_limit("""
        import registry
        model = registry.create("gem_vgg16", input_size=(64, 64))  # new random weights: a 59 MB model.safetensors
    """, f"model.save_pretrained({str(folder)!r})", limit=1 << 20)
    assert result["raised"] == "OSError" and result["errno"] == 27
    assert result["message"].startswith(f"[Errno 27] could not save the model to {folder}: the file would exceed the "
                                        "file-size limit (ulimit -f)")
    assert result["message"].endswith(f"the earlier layout in {folder} is unchanged and no partial file is left")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["m"]
    registry.VPRModel.from_pretrained(folder)  # still loads, every sha256 matching


def test_resave_removes_files_the_model_no_longer_has(tiny, tmp_path, tiny_model_name):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    plain = registry.create(tiny_model_name)  # no centres recorded, whitening not fitted
    hub.save_pretrained(plain, folder)
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors"]


def test_a_corrupted_file_in_a_folder_is_refused(tiny, tmp_path):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(hub.CorruptedFileError, match="model.safetensors.*sha256.*a corrupted or mismatched file"):
        registry.VPRModel.from_pretrained(folder)
    assert weights.read_bytes() == bytes(data)  # a user's own folder is reported, not modified


def test_a_mismatched_file_from_another_save_is_refused(tiny, tmp_path):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    with torch.no_grad():
        model.aggregator.centroids.add_(1.0)
    other = hub.save_pretrained(model, tmp_path / "other")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())  # valid, but not this one
    with pytest.raises(hub.CorruptedFileError, match="corrupted or mismatched"):
        registry.VPRModel.from_pretrained(folder)


def test_config_of_another_model_is_refused(tiny, tmp_path):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    with pytest.raises(hub.WrongModelError, match="holds a 'hubtest_tiny_netvlad' model, not 'gem_vgg16'"):
        registry.VPRModel.from_pretrained(folder, architecture="gem_vgg16")


def test_config_of_another_library_is_refused(tmp_path):
    folder = tmp_path / "timm_resnet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 1000,
                                                    "pretrained_cfg": {"input_size": [3, 224, 224]}}))
    with pytest.raises(hub.WrongModelError, match="not a model-zoo config"):
        registry.VPRModel.from_pretrained(folder)


def test_missing_folder_and_missing_file_are_named(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a Hub repository id"):
        registry.VPRModel.from_pretrained(str(tmp_path / "nowhere"))
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(hub.FileNotInRepoError, match="has no model.safetensors"):
        registry.VPRModel.from_pretrained(folder)


def test_loading_is_strict_about_shapes(tiny, tmp_path):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    with pytest.raises(hub.IncompatibleWeightsError, match="drop the overrides"):
        registry.VPRModel.from_pretrained(folder, num_clusters=6)


def test_loading_is_strict_about_keys(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config["files"]["model.safetensors"]["sha256"] = hub.sha256_file(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.IncompatibleWeightsError, match=r"unexpected \[extra.weight\]"):
        registry.VPRModel.from_pretrained(folder)


def test_centroids_and_pca_files_use_the_reference_keys(tiny, tmp_path):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    with h5py.File(folder / "centroids.h5", "r") as f:
        assert sorted(f) == ["centroids", "descriptors"]
        assert f["centroids"].shape == tuple(model.aggregator.centroids.shape)
    with h5py.File(folder / "pca.h5", "r") as f:
        assert sorted(f) == ["U", "Utmu", "lams", "mu"]
        np.testing.assert_allclose(f["Utmu"][...], f["U"][...].T @ f["mu"][...], rtol=1e-5, atol=1e-6)


def test_pulled_centroids_initialise_a_fresh_aggregator(tiny, tmp_path, tiny_model_name):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    centroids, descriptors = hub.pull_centroids(folder)
    fresh = registry.create(tiny_model_name)
    fresh.aggregator.init_from_clusters(centroids, descriptors)
    assert torch.equal(fresh.aggregator.centroids, model.aggregator.centroids)
    assert torch.allclose(fresh.aggregator.conv.weight, model.aggregator.conv.weight)


def test_pulled_pca_whitens_like_the_model(tiny, tmp_path):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    pca = hub.pull_pca(folder)
    x = torch.nn.functional.normalize(torch.randn(5, pca.in_dim), dim=-1)
    assert torch.allclose(pca(x), model.whitening(x), atol=1e-6)


def test_reference_tool_h5_files_load_directly(tmp_path):
    rng = np.random.default_rng(0)
    U, lams, mu = rng.standard_normal((12, 4)), rng.random(4) + 0.5, rng.standard_normal(12)
    with h5py.File(tmp_path / "pca_params.h5", "w") as f:  # float64, column vectors, as reference scripts write
        f["U"], f["lams"], f["mu"], f["Utmu"] = U, lams[:, None], mu[:, None], (U.T @ mu)[:, None]
    pca = hub.pull_pca(tmp_path / "pca_params.h5")
    assert (pca.in_dim, pca.out_dim) == (12, 4)
    np.testing.assert_allclose(pca.U.numpy(), U, rtol=1e-6)
    with h5py.File(tmp_path / "desc_cen.hdf5", "w") as f:
        f["centroids"], f["descriptors"] = rng.standard_normal((3, 12)), rng.standard_normal((20, 12))
    centroids, descriptors = hub.pull_centroids(tmp_path / "desc_cen.hdf5")
    assert centroids.shape == (3, 12) and descriptors.shape == (20, 12) and centroids.dtype == torch.float32


def test_a_model_without_centres_says_so(tmp_path, tiny_model_name):
    folder = hub.save_pretrained(registry.create(tiny_model_name), tmp_path / "m")
    with pytest.raises(hub.FileNotInRepoError, match="has no centroids.h5.*init_from_clusters"):
        hub.pull_centroids(folder)
    with pytest.raises(hub.FileNotInRepoError, match="has no pca.h5.*fit_whitening"):
        hub.pull_pca(folder)


def test_card_facts_survive_a_save_load_save_cycle(tiny, tmp_path):
    model, _ = tiny
    recalls = {"pitts30k_test": {"R@1": 81.5, "R@5": 91.0}}
    first = hub.save_pretrained(model, tmp_path / "a", recalls=recalls, training={"datasets": ["pitts30k"]})
    again = hub.save_pretrained(registry.VPRModel.from_pretrained(first), tmp_path / "b")
    config = json.loads((again / "config.json").read_text())
    assert config["recalls"] == recalls and config["training"] == {"datasets": ["pitts30k"]}


def test_identical_weights_give_byte_identical_files(tiny, tmp_path):
    model, _ = tiny
    digests = set()
    for i in range(8):  # safetensors writes its metadata in hash-map order, which varies from one save to the next
        folder = hub.save_pretrained(model, tmp_path / f"m{i}")
        digests.add(tuple(hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in sorted(os.listdir(folder))))
    assert len(digests) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m0" / "model.safetensors"), "pt") as fh:
        assert fh.metadata() == {"architecture": model.name, "format": "pt"}


def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("key,value", [("pretrained", "SELF"), ("backbone_weights", "/etc/hostname"),
                                       ("backbone_weights", "imagenet"), ("cache_dir", "/tmp")])
def test_a_config_may_not_name_weights_or_files_to_load(tiny, tmp_path, key, value):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    _edit_config(folder, lambda c: c["model_args"].update({key: str(folder) if value == "SELF" else value}))
    with pytest.raises(hub.WrongModelError, match=f"sets model_args \\['{key}'\\], which are not architecture "
                                                  r"arguments.*valid: .*num_clusters.*whitening_dim"):
        registry.VPRModel.from_pretrained(str(folder))


def test_architecture_arguments_in_a_config_still_load(tiny, tmp_path):
    model, images = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    assert set(json.loads((folder / "config.json").read_text())["model_args"]) <= set(
        registry.models.factory.architecture_args(model.name))
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(str(folder)), images), outputs(model, images))


@pytest.mark.parametrize("entry", [{"size": 10}, "not a dict", {"sha256": "abc"}])
def test_a_files_entry_without_a_sha256_is_a_clear_error(tiny, tmp_path, entry):
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m")
    _edit_config(folder, lambda c: c["files"].update({"pca.h5": entry}))
    with pytest.raises(hub.WrongModelError, match="lists pca.h5 without a sha256.*re-save"):
        registry.VPRModel.from_pretrained(str(folder))
    with pytest.raises(hub.WrongModelError, match="lists pca.h5 without a sha256"):
        hub.pull_pca(str(folder))


def test_a_mistyped_local_folder_is_not_taken_for_a_hub_repository(tiny, tmp_path, monkeypatch, tiny_model_name):
    model, _ = tiny
    model.save_pretrained(tmp_path / "models" / "trained")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'models/trainde' is not an existing directory .models/ exists here"):
        registry.create(tiny_model_name, pretrained="models/trainde")  # no Hub request (the loopback guard)
