"""Bundled releases: two small releases that share frozen backbone tensors, bundled (`registry.hub.bundle_releases`,
`vpr release bundle`) so that the shared tensors are stored once; each still loads to exactly the tensors of its
ordinary folder, saves and pushes the complete ordinary layout byte for byte, and every damaged or missing piece
is a named error."""
from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import registry
import registry.hub as hub

from .helpers import TOKEN, TinyBackbone, initialise, outputs, register_tiny_netvlad

NAME = "bundletest_netvlad"
TAGS = ("alpha", "beta")


class FrozenBackbone(TinyBackbone):
    """Two convolutions, the second with 65536 weights (so a float16 save casts it), 256 channels at stride 16."""

    mid_channels = 16
    out_channels = 256


@pytest.fixture
def model_name(monkeypatch) -> str:
    """Registers `bundletest_netvlad` (the backbone above + NetVLAD with 4 clusters + an 8-d whitening)."""
    register_tiny_netvlad(monkeypatch, NAME, "bundletest_frozen", FrozenBackbone,
                          "test model: frozen backbone + NetVLAD (4 clusters), 8-d")
    return NAME


def _releases(root: Path, dtype=None, share_backbone: bool = True):
    """Two trained-looking releases `<NAME>.alpha` and `.beta` in `root` (ordinary folders): the backbone of the
    second copied from the first (a frozen backbone) unless `share_backbone` is False; aggregator and whitening
    their own."""
    first = initialise(registry.create(NAME), seed=0)
    second = registry.create(NAME)
    if share_backbone:
        second.backbone.load_state_dict(first.backbone.state_dict())
    initialise(second, seed=1)
    return [m.save_pretrained(root / f"{NAME}.{tag}", dtype=dtype) for m, tag in zip((first, second), TAGS)]


@pytest.fixture(params=[None, "float16"], ids=["float32", "float16"])
def bundled(request, model_name, tmp_path):
    """(ordinary folders, bundled folders, the report, the dtype they were saved with)."""
    ordinary = _releases(tmp_path / "ordinary", dtype=request.param)
    report = hub.bundle_releases(ordinary, tmp_path / "bundled" / "_shared", tmp_path / "bundled")
    return ordinary, [tmp_path / "bundled" / o.name for o in ordinary], report, request.param


def _state(folder: Path):
    return registry.VPRModel.from_pretrained(str(folder)).state_dict()


def _bytes(folders) -> int:
    return sum(p.stat().st_size for f in folders for p in Path(f).rglob("*") if p.is_file())


def test_each_bundled_release_loads_exactly_the_tensors_of_its_ordinary_folder(bundled):
    ordinary, folders, report, _ = bundled
    for original, folder in zip(ordinary, folders):
        assert not (folder / "model.safetensors").exists() and (folder / "bundle.json").is_file()
        want, got = _state(original), _state(folder)
        assert sorted(got) == sorted(want)
        assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
        # the rebuilt file is the original, byte for byte
        sha = json.loads((folder / "config.json").read_text())["files"]["model.safetensors"]["sha256"]
        assert hub.bundled_weights(folder, sha) == (original / "model.safetensors").read_bytes()


def test_the_shared_store_holds_the_frozen_backbone_once_and_the_bundle_is_smaller(bundled):
    ordinary, folders, report, _ = bundled
    backbone = sorted(f"backbone.{k}" for k in FrozenBackbone().state_dict())
    (shared,) = report["shared"]
    assert shared["tensors"] == backbone and shared["releases"] == [o.name for o in ordinary]
    path = Path(shared["file"])
    assert path.name == hashlib.sha256(path.read_bytes()).hexdigest() + ".safetensors"
    stored = load_file(str(path))
    original = load_file(str(ordinary[0] / "model.safetensors"))
    assert sorted(stored) == backbone and all(torch.equal(stored[k], original[k]) for k in backbone)
    for folder in folders:  # each folder keeps only what it does not share
        own = load_file(str(folder / "own.safetensors"))
        assert not set(own) & set(backbone) and set(own) | set(backbone) == set(original)
    after = _bytes([*folders, path.parent])
    assert after == report["bytes_after"] and report["bytes_before"] == _bytes(ordinary)
    shared_bytes = sum(t.numel() * t.element_size() for t in stored.values())
    assert after < _bytes(ordinary) - shared_bytes + 4096  # one copy of the shared bytes saved, give or take headers


def test_pretrained_true_loads_a_bundled_release_through_the_registry(bundled, monkeypatch):
    ordinary, folders, _, _ = bundled
    entry = registry.get_entry(NAME)
    monkeypatch.setattr(entry, "releases", registry.find_releases(folders[0].parent, NAME))
    monkeypatch.setattr(entry, "default_release", "alpha")
    assert sorted(entry.releases) == list(TAGS)  # the shared store beside them is not a release
    images = torch.randn(2, 3, 32, 32)
    for tag, original in zip(TAGS, ordinary):
        model = registry.create(f"{NAME}.{tag}", pretrained=True)
        assert model.config["source"] == f"bundled:{NAME}.{tag}"
        assert torch.equal(outputs(model, images), outputs(registry.VPRModel.from_pretrained(str(original)), images))


def test_save_pretrained_of_a_bundled_load_writes_the_original_layout_bit_for_bit(bundled, tmp_path):
    ordinary, folders, _, dtype = bundled
    for original, folder in zip(ordinary, folders):
        out = registry.VPRModel.from_pretrained(str(folder)).save_pretrained(tmp_path / "resaved" / folder.name,
                                                                            dtype=dtype)
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in original.iterdir())
        for path in original.iterdir():
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_unbundle_writes_the_ordinary_folder_back(bundled, tmp_path):
    ordinary, folders, _, _ = bundled
    out = hub.unbundle_release(folders[1], tmp_path / "unbundled" / folders[1].name)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ordinary[1].iterdir())
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in ordinary[1].iterdir())
    with pytest.raises(hub.BundleError, match="is not a bundled release"):
        hub.unbundle_release(ordinary[1], tmp_path / "again")


def test_a_bundled_release_pushes_and_pulls_as_a_complete_hub_repository(bundled, hub_server):
    from huggingface_hub import HfApi

    ordinary, folders, _, dtype = bundled
    pushed, repo = {}, "tester/bundled"
    for branch, folder in (("ordinary", ordinary[0]), ("main", folders[0])):  # the bundled copy last, on main
        commit = registry.VPRModel.from_pretrained(str(folder)).push_to_hub(repo, token=TOKEN, dtype=dtype,
                                                                            branch=branch)
        files = sorted(s.rfilename for s in HfApi().model_info(repo, revision=commit).siblings)
        assert files == [".gitattributes", "README.md", "centroids.h5", "config.json", "model.safetensors", "pca.h5"]
        pushed[branch] = {name: hub_server.file_bytes(repo, name, commit) for name in files}
    assert pushed["main"] == pushed["ordinary"]  # the same repository as the ordinary folder's push
    assert pushed["main"]["model.safetensors"] == (ordinary[0] / "model.safetensors").read_bytes()
    pulled = registry.VPRModel.from_pretrained(f"{repo}@{commit}").state_dict()
    want = _state(ordinary[0])
    assert all(torch.equal(pulled[k], want[k]) for k in want)


def test_vpr_release_publish_pushes_bundled_releases_and_compares_them(bundled, hub_server, monkeypatch, capsys):
    _, folders, _, _ = bundled
    entry = registry.get_entry(NAME)
    monkeypatch.setattr(entry, "releases", registry.find_releases(folders[0].parent, NAME))
    release = importlib.import_module("registry.cli.release")
    assert release.main(["publish", "--namespace", "tester", "--token", TOKEN,
                         "--releases", f"{NAME}.alpha", f"{NAME}.beta"]) == 0
    assert capsys.readouterr().out.count("(pulled back: descriptors bit-identical)") == 2


@pytest.fixture
def one(model_name, tmp_path):
    """A float32 bundle of the two releases: (bundled folder of the first, its shared file, the original)."""
    ordinary = _releases(tmp_path / "ordinary")
    report = hub.bundle_releases(ordinary, tmp_path / "bundled" / "_shared", tmp_path / "bundled")
    return tmp_path / "bundled" / ordinary[0].name, Path(report["shared"][0]["file"]), ordinary[0]


def test_a_corrupted_shared_file_is_refused_naming_it_and_the_fix(one):
    folder, shared, _ = one
    data = bytearray(shared.read_bytes())
    data[-1] ^= 0x01
    shared.write_bytes(bytes(data))
    with pytest.raises(hub.CorruptedFileError, match=rf"{shared.name}.*shared with other bundled releases.*"
                                                     r"has sha256 .*vpr release bundle"):
        registry.VPRModel.from_pretrained(str(folder))


def test_a_missing_shared_file_is_refused_naming_it_and_the_fix(one):
    folder, shared, _ = one
    shared.unlink()
    with pytest.raises(hub.FileNotInRepoError, match=rf"names \.\./_shared/{shared.name} .*does not exist.*"
                                                     "vpr release bundle.*reinstall.*vpr release unbundle"):
        registry.VPRModel.from_pretrained(str(folder))


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "bundle.json").read_text())
    edit(manifest)
    (folder / "bundle.json").write_text(json.dumps(manifest))


def test_a_manifest_recording_another_hash_is_refused(one):
    folder, _, _ = one
    _edit_manifest(folder, lambda m: m["pieces"][0].update(sha256="0" * 64))
    with pytest.raises(hub.CorruptedFileError, match=r"own.safetensors \(its own tensors.*records sha256 0{64}"):
        registry.VPRModel.from_pretrained(str(folder))


def test_a_manifest_naming_a_shared_file_by_another_name_than_its_hash_is_refused(one):
    folder, shared, _ = one
    (shared.parent / ("f" * 64 + ".safetensors")).write_bytes(shared.read_bytes())
    _edit_manifest(folder, lambda m: m["pieces"][1].update(file="../_shared/" + "f" * 64 + ".safetensors"))
    with pytest.raises(hub.WrongModelError, match=r"names the piece '\.\./_shared/f{64}.safetensors'.*<its sha256>"):
        registry.VPRModel.from_pretrained(str(folder))


def test_a_manifest_that_leaves_a_tensor_out_is_refused(one):
    folder, _, _ = one
    _edit_manifest(folder, lambda m: m["pieces"][1]["tensors"].pop())
    with pytest.raises(hub.WrongModelError, match=r"bundle.json: no piece supplies the tensors \['backbone"):
        registry.VPRModel.from_pretrained(str(folder))


def test_a_malformed_manifest_names_the_field(one):
    folder, _, _ = one
    _edit_manifest(folder, lambda m: m.update(size="big"))
    with pytest.raises(hub.WrongModelError, match=r"bundle.json has invalid fields: size \('big'\)"):
        registry.VPRModel.from_pretrained(str(folder))


def test_a_bundle_beside_another_releases_config_is_refused(one, tmp_path):
    folder, _, original = one
    other = tmp_path / "bundled" / f"{NAME}.beta"
    shutil.copy2(other / "config.json", folder / "config.json")  # config.json records the other weights' sha256
    with pytest.raises(hub.CorruptedFileError, match="rebuilds to sha256 .*config.json .*do not belong together"):
        registry.VPRModel.from_pretrained(str(folder))


def test_an_ordinary_model_safetensors_wins_over_a_leftover_manifest(one, tmp_path):
    folder, shared, original = one
    shutil.copy2(original / "model.safetensors", folder / "model.safetensors")
    shared.unlink()  # the bundle is no longer complete, and not needed
    want = _state(original)
    got = _state(folder)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_bundling_in_place_removes_the_full_files_and_keeps_every_load(model_name, tmp_path):
    ordinary = _releases(tmp_path / "releases", dtype="float16")
    copies = [shutil.copytree(o, tmp_path / "copies" / o.name) for o in ordinary]
    report = hub.bundle_releases(ordinary, tmp_path / "releases" / "_shared")
    assert [r["folder"] for r in report["releases"]] == [str(o) for o in ordinary]
    for folder, copy in zip(ordinary, copies):
        assert hub.is_bundled(folder)
        want, got = _state(copy), _state(folder)
        assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(hub.BundleError, match="bundled already.*--out-dir"):
        hub.bundle_releases(ordinary, tmp_path / "releases" / "_shared")
    again = hub.bundle_releases(ordinary, tmp_path / "again" / "_shared", tmp_path / "again")  # from bundles
    assert Path(again["shared"][0]["file"]).name == Path(report["shared"][0]["file"]).name


def test_share_patterns_must_name_bit_identical_tensors(model_name, tmp_path):
    ordinary = _releases(tmp_path / "ordinary")
    with pytest.raises(hub.BundleError, match=r"tensor aggregator.centroids .*not bit-identical.*"
                                              rf"{NAME}.alpha: F32 \[4, 256\] sha256 [0-9a-f]{{12}}; {NAME}.beta"):
        hub.bundle_releases(ordinary, tmp_path / "out" / "_shared", tmp_path / "out", share=["aggregator.*"])
    with pytest.raises(hub.BundleError, match=r"--share head.\* matches no tensor"):
        hub.bundle_releases(ordinary, tmp_path / "out" / "_shared", tmp_path / "out", share=["head.*"])
    assert not (tmp_path / "out").exists()  # refused before anything was written
    report = hub.bundle_releases(ordinary, tmp_path / "out" / "_shared", tmp_path / "out",
                                 share=["backbone.features.2.*"])
    assert report["shared"][0]["tensors"] == ["backbone.features.2.bias", "backbone.features.2.weight"]


def test_releases_that_share_nothing_are_refused(model_name, tmp_path):
    ordinary = _releases(tmp_path / "ordinary", share_backbone=False)
    with pytest.raises(hub.BundleError, match="no tensor is bit-identical in two of .*nothing to store once"):
        hub.bundle_releases(ordinary, tmp_path / "out" / "_shared", tmp_path / "out")
    with pytest.raises(hub.BundleError, match="two or more release folders"):
        hub.bundle_releases(ordinary[:1], tmp_path / "out" / "_shared", tmp_path / "out")


def test_an_existing_output_folder_is_refused(model_name, tmp_path):
    ordinary = _releases(tmp_path / "ordinary")
    (tmp_path / "out" / ordinary[1].name).mkdir(parents=True)
    with pytest.raises(hub.BundleError, match=rf"{ordinary[1].name} exist already: remove them"):
        hub.bundle_releases(ordinary, tmp_path / "out" / "_shared", tmp_path / "out")


def test_vpr_release_bundle_and_unbundle(model_name, tmp_path, capsys):
    release = importlib.import_module("registry.cli.release")
    ordinary = _releases(tmp_path / "ordinary")
    args = ["bundle", *map(str, ordinary), "--shared-out", str(tmp_path / "out" / "_shared")]
    assert release.main(args) == 2
    assert "give exactly one of --in-place and --out-dir" in capsys.readouterr().err
    assert release.main([*args, "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[:out.rindex("}") + 1])
    assert len(report["releases"]) == 2 and report["bytes_after"] < report["bytes_before"]
    assert f"{report['bytes_before']:,} bytes before, {report['bytes_after']:,} bundled" in out
    assert release.main([*args, "--out-dir", str(tmp_path / "out")]) == 1
    assert "exist already" in capsys.readouterr().err
    back = tmp_path / "back"
    assert release.main(["unbundle", str(tmp_path / "out" / ordinary[0].name), "--out", str(back)]) == 0
    assert (back / "model.safetensors").read_bytes() == (ordinary[0] / "model.safetensors").read_bytes()
