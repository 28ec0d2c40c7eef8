"""registry.export_onnx: every registered model, dynamic batch and size, onnxruntime equal to PyTorch."""
import json
import re

import pytest
import torch
import torch.nn.functional as F

import registry
from registry.cli.export import main
from registry.export import onnx_session, relative_error

ort = pytest.importorskip("onnxruntime", reason="the ONNX tests need the onnx extra: pip install -e '.[onnx]'")
onnx = pytest.importorskip("onnx", reason="the ONNX tests need the onnx extra: pip install -e '.[onnx]'")

SIZES = [(80, 112), (96, 128)]  # ClusVPR's exported KNN needs >= 11 tokens: a 5x7 conv5 map pools to 3x4 + 1
SMALL = {
    "clusvpr_vgg16": {"num_clusters": 4, "whitening_dim": 16},
    "netvlad_vgg16": {"num_clusters": 4, "whitening_dim": 16},
}


def small_model(name: str, **extra):
    """A small, randomly initialised model with a fitted whitening where it has one."""
    model = registry.create(name, input_size=SIZES[0], **SMALL.get(name, {}), **extra)
    if model.whitening is not None:
        g = torch.Generator().manual_seed(1)
        model.fit_whitening(F.normalize(torch.randn(model.whitening.out_dim + 8, model.whitening.in_dim, generator=g),
                                        dim=-1))
    return model


def run(path, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(onnx_session(path).run(["descriptors"], {"images": x.numpy()})[0])


@pytest.mark.parametrize("name", registry.list_models())
def test_onnxruntime_matches_pytorch_at_two_batch_sizes_and_two_image_sizes(name, tmp_path):
    model = small_model(name)
    path = registry.export_onnx(model, tmp_path / f"{name}.onnx", input_size=SIZES[0])
    for h, w in SIZES:
        for n in (1, 4):
            x = torch.randn(n, 3, h, w)
            with torch.no_grad():
                expected = model(x)
            got = run(path, x)
            assert got.shape == expected.shape == (n, model.descriptor_dim)
            assert relative_error(got, expected) < 1e-4


def test_an_imagenet_input_graph_gives_the_native_descriptors(tmp_path):
    native = small_model("clusvpr_vgg16")
    imagenet = registry.create("clusvpr_vgg16", input_size=SIZES[0], **SMALL["clusvpr_vgg16"], input_norm="imagenet")
    imagenet.load_state_dict(native.state_dict())
    path = registry.export_onnx(imagenet, tmp_path / "m.onnx")
    rgb = torch.rand(2, 3, *SIZES[1])
    mean_n, std_n = (torch.tensor(native.input_config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    mean_i, std_i = (torch.tensor(imagenet.input_config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        expected = native((rgb - mean_n) / std_n)
    assert relative_error(run(path, (rgb - mean_i) / std_i), expected) < 1e-4


def test_the_graph_records_how_to_feed_it(tmp_path):
    model = small_model("gem_vgg16", input_norm="imagenet")
    path = registry.export_onnx(model, tmp_path / "m.onnx", verify=False)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["architecture"] == "gem_vgg16" and meta["input_norm"] == "imagenet"
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406]) and meta["descriptor_dim"] == "512"
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]


def test_clusvpr_at_a_size_too_small_for_its_knn_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fewer than the KNN's k\\+1 = 11"):
        registry.export_onnx(small_model("clusvpr_vgg16"), tmp_path / "m.onnx", input_size=(64, 64))


def test_cli_exports_and_verifies(tmp_path, capsys):
    assert main(["gem_vgg16", str(tmp_path / "gem.onnx"), "--input-size", "64", "64", "--input-norm", "imagenet"]) == 0
    assert "mean [0.485, 0.456, 0.406]" in capsys.readouterr().out
    assert run(tmp_path / "gem.onnx", torch.randn(3, 3, 64, 80)).shape == (3, 512)


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"clusvpr-zoo\[onnx\]"):
        onnx_session(tmp_path / "m.onnx")


@pytest.mark.parametrize("size", [(-5, 64), (0, 0), (8, 64), (64,), (64.5, 96), (64, 100000), "64x64"])
def test_an_input_size_outside_the_valid_range_is_refused_with_the_range(tmp_path, size):
    model = small_model("gem_vgg16")
    with pytest.raises(ValueError, match=r"export_onnx: input_size must be \(H, W\) with H and W integers in "
                                         r"16\.\.8192 for gem_vgg16, got "):
        registry.export_onnx(model, tmp_path / "m.onnx", input_size=size)
    assert list(tmp_path.iterdir()) == []


def test_an_export_past_the_file_size_limit_fails_naming_the_file_and_keeps_the_earlier_graph(tmp_path):
    from real_faults import write_under_limit

    from registry._util.files import sha256_file

    path = registry.export_onnx(small_model("gem_vgg16"), tmp_path / "m.onnx", verify=False)
    earlier = sha256_file(path)
    result = write_under_limit("""
        import registry
        model = registry.create("gem_vgg16", input_size=(64, 64))
    """, f"registry.export_onnx(model, {str(path)!r}, verify=False)", limit=1 << 20)  # the graph is 59 MB
    assert result["raised"] == "OSError" and result["errno"] == 27
    assert result["message"].startswith(f"[Errno 27] could not write {path}: the file would exceed the file-size "
                                         "limit (ulimit -f)")
    assert result["message"].endswith("the earlier m.onnx is unchanged and no partial file is left")
    assert sha256_file(path) == earlier and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert onnx_session(path).run(["descriptors"], {"images": torch.randn(1, 3, 80, 112).numpy()})[0].shape == (1, 512)


def test_a_graph_that_fails_verification_does_not_replace_the_earlier_file(tmp_path, monkeypatch):
    import registry.export as export

    path = registry.export_onnx(small_model("gem_vgg16"), tmp_path / "m.onnx", verify=False)
    earlier = path.read_bytes()
    monkeypatch.setattr(export, "relative_error", lambda got, expected: 1.0)  # as if onnxruntime disagreed
    with pytest.raises(RuntimeError, match=rf"{path}: onnxruntime differs from PyTorch by 1\.00e\+00 relative"):
        registry.export_onnx(small_model("gem_vgg16"), path)
    assert path.read_bytes() == earlier and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize("argv,message", [
    (["--input-size", "-5", "64"], "--input-size: must be >= 1, got -5"),
    (["--input-size", "8", "64"], r"input_size must be \(H, W\) with H and W integers in 16..8192 for gem_vgg16"),
])
def test_cli_refuses_an_input_size_outside_the_range_with_exit_status_2(tmp_path, capsys, argv, message):
    assert main(["gem_vgg16", str(tmp_path / "gem.onnx"), *argv]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_output_folder_it_cannot_write_before_building_the_model(tmp_path, capsys):
    (tmp_path / "a_file").write_text("in the way")
    assert main(["gem_vgg16", str(tmp_path / "a_file" / "gem.onnx")]) == 2
    assert f"cannot be written: {tmp_path / 'a_file'} is a file" in capsys.readouterr().err


@pytest.mark.parametrize("feature_size", [(1, 1), (4, 4), (5, 5), (4, 6), (5, 7), (6, 8), (15, 20)])
def test_clusvpr_export_hook_counts_the_cwt_tokens_its_knn_needs(feature_size):
    aggregator = registry.create("clusvpr_vgg16", num_clusters=4, whitening_dim=None, input_size=(96, 128)).aggregator
    pooled = F.avg_pool2d(torch.zeros(1, 1, *feature_size), 2, ceil_mode=True)  # the CWT's token grid
    tokens = pooled.numel() + 1  # and its class token
    problem = aggregator.export_size_problem(feature_size)
    assert (problem is None) == (tokens >= 11)
    if problem is not None:
        assert f"gives {tokens} CWT tokens" in problem
    shallow = registry.create("clusvpr_vgg16", num_clusters=4, whitening_dim=None, cwt_depth=0,
                              input_size=(96, 128)).aggregator
    assert shallow.export_size_problem(feature_size) is None  # no CWT block, no KNN


def test_a_model_whose_aggregator_has_no_export_hook_exports_at_its_smallest_size(tmp_path):
    model = registry.create("gem_vgg16", input_size=(16, 16))
    assert not hasattr(model.aggregator, "export_size_problem") and model.min_input_side == 16
    registry.export_onnx(model, tmp_path / "m.onnx", input_size=(16, 16))
    assert json.loads(onnx.load(str(tmp_path / "m.onnx")).metadata_props[-1].value)["min_side"] == 16
