"""Map: queries equal brute-force float64 nearest neighbours over independently extracted descriptors; place ids
and coordinates come back as given; the map runs on the runtime it was built with; another model, a damaged or
missing file is refused with a MapError naming the file and the fix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from map_helpers import MODEL, save_weights, write_images

import registry
from registry.evaluation import extract_descriptors
from registry.maps import Map, MapError, Match

pytest.importorskip("lance")


def _reference(weights: str, images, queries, k: int):
    """Top-k rows and distances by brute force in float64 over descriptors extracted here, not by the map."""
    model = registry.create(MODEL, pretrained=weights)
    db = extract_descriptors(model, images, device="cpu", progress=False).astype(np.float64)
    q = extract_descriptors(model, queries, device="cpu", progress=False).astype(np.float64)
    dist = 2.0 - 2.0 * q @ db.T
    rows = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(dist, rows, axis=1)


def test_query_equals_brute_force_float64_nearest_neighbours(weights, images, tmp_path):
    m = Map.build(tmp_path / "map", images[:16], model=MODEL, pretrained=weights, index="flat", chunk_size=5,
                  progress=False)
    queries = images[14:]  # two map images and four new ones
    rows, dists = _reference(weights, images[:16], queries, 5)
    got = m.query(queries, k=5)
    assert [[x.row for x in r] for r in got] == rows.tolist()
    np.testing.assert_allclose([[x.distance for x in r] for r in got], dists, atol=2e-5)
    assert [x.rank for x in got[0]] == [1, 2, 3, 4, 5] and got[0][0].image == images[14]
    assert m.count == 16 and m.dim == 32 and m.model_name == MODEL and m.runtime.kind == "torch"


def test_integer_place_ids_stay_integers_and_coordinates_come_back(weights, images, tmp_path):
    places = [i // 2 for i in range(12)]
    coords = np.arange(24, dtype=np.float64).reshape(12, 2) + 0.25
    Map.build(tmp_path / "map", images[:12], model=MODEL, pretrained=weights, places=places, coords=coords,
              index="flat", progress=False)
    m = Map.open(tmp_path / "map")
    best = m.query([images[7]], k=1)[0][0]
    assert best == Match(1, 7, 3, best.distance, images[7], (14.25, 15.25)) and type(best.place) is int
    assert best.as_dict() == {"rank": 1, "row": 7, "place": 3, "distance": best.distance, "image": images[7],
                              "coords": [14.25, 15.25]}
    assert json.loads(json.dumps(best.as_dict()))["place"] == 3
    assert m.image_path(7) == Path(images[7]) and m.info()["has_coords"]
    with pytest.raises(IndexError):
        m.image_path(12)


def test_info_reports_size_model_runtime_index_and_bytes_per_image(weights, images, tmp_path):
    m = Map.build(tmp_path / "map", images[:10], model=MODEL, pretrained=weights, index="auto", progress=False)
    info = m.info()
    assert info["count"] == 10 and info["dim"] == 32 and info["model"] == MODEL and info["runtime"] == "torch"
    assert info["index"]["kind"] == "flat"  # auto: 10 images are searched exactly
    assert info["ram_bytes_per_image"] >= 32 * 4 and info["disk_bytes_per_image"] > 32 * 4
    assert [v["version"] for v in info["versions"]] == [m.version] and info["config_hash"] == m.store.meta[
        "config_hash"]
    json.dumps(info)


def test_k_out_of_range_and_descriptors_of_another_width_are_refused(weights, images, tmp_path):
    m = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    for k in (0, 7, True, 2.0):
        with pytest.raises(MapError, match="k must be an integer in 1..6"):
            m.search(np.ones((1, 32), np.float32), k)
    with pytest.raises(MapError, match="32-d"):
        m.search(np.ones((1, 16), np.float32), 1)


def test_a_map_opened_with_other_model_weights_is_refused_naming_both(weights, images, tmp_path):
    folder = tmp_path / "map"
    m = Map.build(folder, images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    other = save_weights(tmp_path / "other", seed=1)
    for name in ("config.json", "model.safetensors"):  # another model's files, its sha256 recorded as well
        (folder / "model" / name).write_bytes((Path(other) / name).read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    from registry._util.files import sha256_file

    manifest["files"] = {k: sha256_file(folder / k) for k in manifest["files"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MapError, match=rf"config hash {m.manifest['config_hash'][:12]}.*config hash [0-9a-f]{{12}}"):
        Map.open(folder)


@pytest.mark.parametrize("damage, message", [
    ("delete manifest.json", r"manifest.json is missing.*run the same `vpr map build` again"),
    ("garble manifest.json", r"manifest.json is not valid JSON.*vpr map build"),
    ("manifest without model", r"manifest.json: field 'model' must be a str"),
    ("modify model.safetensors", r"model.safetensors does not match the sha256.*restore it"),
    ("delete the index", r"index/v\d+ is missing"),
    ("manifest names a later store version", r"store.*version 99.*cannot be read"),
])
def test_a_damaged_map_is_refused_naming_the_file_and_the_fix(weights, images, tmp_path, damage, message):
    folder = tmp_path / "map"
    m = Map.build(folder, images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    if damage == "delete manifest.json":
        (folder / "manifest.json").unlink()
    elif damage == "garble manifest.json":
        (folder / "manifest.json").write_text('{"format": 1, ')
    elif damage == "manifest without model":
        del manifest["model"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "modify model.safetensors":
        raw = bytearray((folder / "model" / "model.safetensors").read_bytes())
        raw[-1] ^= 0xFF
        (folder / "model" / "model.safetensors").write_bytes(bytes(raw))
    elif damage == "delete the index":
        import shutil

        shutil.rmtree(folder / m.manifest["index"]["folder"])
    else:
        manifest["store"]["version"] = 99
        (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MapError, match=message):
        Map.open(folder)


def test_an_onnx_map_runs_on_the_graph_kept_in_its_folder(weights, images, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "map"
    m = Map.build(folder, images[:8], model=MODEL, pretrained=weights, runtime="onnx", index="flat",
                  progress=False)
    assert (folder / "runtime.onnx").is_file() and m.manifest["files"]["runtime.onnx"]
    again = Map.open(folder)
    assert again.runtime.kind == "onnx" and again.manifest["runtime"] == "onnx"
    graph = registry.load_runtime(folder / "runtime.onnx")
    import torch

    from registry.datasets.images import open_rgb
    from registry.evaluation.extract import Preprocess

    batch = torch.stack([Preprocess(graph.input_config)(open_rgb(p)) for p in images[8:11]])
    np.testing.assert_allclose(again.encode(images[8:11]), graph.encode(batch).numpy(), atol=1e-6)
    rows, _ = _reference(weights, images[:8], images[8:11], 3)
    assert [[x.row for x in r] for r in again.query(images[8:11], k=3)] == rows.tolist()


def test_an_int8_map_keeps_its_int8_graph(weights, images, tmp_path):
    pytest.importorskip("onnxruntime")
    from registry.quantize import check_int8_cpu

    if not check_int8_cpu():
        pytest.skip("this CPU has no int8 dot products")
    folder = tmp_path / "map"
    m = Map.build(folder, images[:8], model=MODEL, pretrained=weights, runtime="onnx-int8", index="flat",
                  progress=False)
    again = Map.open(folder)
    assert again.runtime.kind == "onnx-int8" and again.runtime.calibration["num_images"] == 8
    assert again.query([images[3]], k=1)[0][0].row == 3 and m.info()["runtime"] == "onnx-int8"


def test_the_heatmap_is_on_the_input_grid_in_0_to_1(weights, images, tmp_path):
    m = Map.build(tmp_path / "map", images[:4], model=MODEL, pretrained=weights, index="flat", progress=False)
    from PIL import Image

    heat = m.heatmap(Image.open(images[0]).convert("RGB"))
    assert heat.shape == (32, 48) and heat.dtype == np.float32 and heat.min() == 0.0 and heat.max() == 1.0


def test_the_model_an_onnx_map_loads_for_heat_maps_is_loaded_once_by_threads_asking_at_once(weights, images,
                                                                                            tmp_path, monkeypatch):
    import threading
    import time

    from PIL import Image

    import registry.maps.engine

    Map.build(tmp_path / "map", images[:4], model=MODEL, pretrained=weights, runtime="onnx", index="flat",
              progress=False)
    m = Map.open(tmp_path / "map")  # an onnx map: no torch model until a heat map asks for one
    loads = []
    load_model = registry.maps.engine.load_model

    def slow_load(*args):
        loads.append(args)
        time.sleep(0.2)  # every thread reaches the loader while the first is still in it
        return load_model(*args)

    monkeypatch.setattr(registry.maps.engine, "load_model", slow_load)
    image = Image.open(images[1]).convert("RGB")
    start, heats = threading.Barrier(4), []

    def ask() -> None:
        start.wait()
        heats.append(m.heatmap(image))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(loads) == 1 and len(heats) == 4 and all(np.array_equal(h, heats[0]) for h in heats)


def test_the_heatmap_runs_the_backbone_once_also_where_the_aggregator_has_no_attention_map(weights, images):
    import torch
    from PIL import Image

    from registry.maps.heatmap import heatmap

    model = registry.create(MODEL, pretrained=weights).eval()
    passes = []
    model.backbone.register_forward_hook(lambda module, args, out: passes.append(out.detach().clone()))
    image = Image.open(images[2]).convert("RGB")
    with_attention = heatmap(model, image)
    assert len(passes) == 1

    def none(features):
        raise NotImplementedError

    model.aggregator.attention_maps = none
    fallback = heatmap(model, image)
    assert len(passes) == 2  # one more pass: the attention map's absence did not cost a second one
    norm = passes[1].float().norm(dim=1, keepdim=True)  # the reference: the local features' norm, upsampled
    up = torch.nn.functional.interpolate(norm, size=(32, 48), mode="bilinear", align_corners=False)[0, 0]
    want = ((up - up.min()) / (up.max() - up.min())).numpy()
    np.testing.assert_allclose(fallback, want, atol=1e-6)
    assert not np.allclose(fallback, with_attention)


def test_building_into_a_finished_map_is_refused(weights, images, tmp_path):
    Map.build(tmp_path / "map", images[:4], model=MODEL, pretrained=weights, index="flat", progress=False)
    with pytest.raises(MapError, match="is a map already: add images with `vpr map add"):
        Map.build(tmp_path / "map", images[:4], model=MODEL, pretrained=weights, progress=False)


def test_other_images_than_a_stopped_build_had_are_refused(weights, images, tmp_path):
    write_images(tmp_path / "more", 2)
    from registry.maps.building import BUILD_ARGS

    folder = tmp_path / "map"
    folder.mkdir()
    (folder / BUILD_ARGS).write_text(json.dumps({"model": MODEL, "pretrained": "x"}))
    with pytest.raises(MapError, match="holds a stopped build with other"):
        Map.build(folder, images[:4], model=MODEL, pretrained=weights, index="flat", progress=False)


def test_a_map_of_a_bundled_release_records_its_source_and_opens_from_its_own_copy(images, tmp_path):
    m = Map.build(tmp_path / "map", images[:4], model="gem_vgg16", pretrained=True, index="flat", progress=False)
    assert m.manifest["source"] == "bundled:gem_vgg16.nordland" and m.manifest["pretrained"] == "true"
    again = Map.open(tmp_path / "map")
    release = registry.create("gem_vgg16", pretrained=True)
    assert again.runtime.model.config["source"] == "bundled:gem_vgg16.nordland"
    assert again.dim == release.descriptor_dim == 256
    want = extract_descriptors(release, images[:4], device="cpu", progress=False)
    np.testing.assert_allclose(again.database(), want, atol=1e-5)  # the release's own descriptors
    assert [x.row for x in again.query([images[2]], k=1)[0]] == [2]


def test_an_index_that_cannot_be_trained_on_the_map_is_refused_and_a_rerun_with_another_finishes(weights, images,
                                                                                                   tmp_path):
    with pytest.raises(MapError, match="cannot build the ivfpq index of 6 images.*rerun with another --index"):
        Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="ivfpq", progress=False)
    m = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    assert m.count == 6 and m.info()["index"]["kind"] == "flat"
