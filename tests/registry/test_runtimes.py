"""registry.compile_for / load_runtime: every runtime gives VPRModel.encode's descriptors (float: within 1e-4
relative; int8: a recorded cosine tolerance), at batch 1 and odd sizes, and int8 survives a save/load round trip."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import registry
from registry.export import relative_error
from registry.models.aggregators.gem import GeM
from registry.models.aggregators.netvlad import NetVLAD
from registry.whitening import PCAWhitening

pytest.importorskip("onnxruntime", reason="the runtime tests need the onnx extra: pip install -e '.[onnx]'")
INPUT = {"input_size": (3, 48, 64), "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
# int8 against float32 on these small random-weight models, per-image cosine similarity: measured 0.99999 mean and
# 0.99998 worst (GeM), 0.9999996 / 0.9999994 (NetVLAD) at batch 1, 3 and 7 when written; the releases' figures on
# real images are in benchmarks/RESULTS.md (section 11)
INT8_MEAN_COS, INT8_MIN_COS = 0.999, 0.998


class TinyBackbone(nn.Sequential):
    """Three conv-ReLU layers and two max-pools: stride 4, 16 channels."""

    out_channels, stride = 16, 4

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1))


def tiny_model(kind: str) -> registry.VPRModel:
    """A random-weight model of each family: GeM, NetVLAD with a fitted whitening."""
    torch.manual_seed(0)
    if kind == "gem":
        return registry.VPRModel(TinyBackbone(), GeM(16), input_config=INPUT,
                                 config={"architecture": "tiny_gem"}).eval()
    whitening = PCAWhitening(16 * 4, 8)
    whitening.fit(F.normalize(torch.randn(40, 64), dim=-1))
    return registry.VPRModel(TinyBackbone(), NetVLAD(16, num_clusters=4), whitening, input_config=INPUT,
                             config={"architecture": "tiny_netvlad"}).eval()


def images(n: int, h: int = 48, w: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def cosines(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(got.double(), ref.double(), dim=-1)


@pytest.mark.parametrize("kind", ["gem", "netvlad"])
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_float_runtimes_match_eager_within_1e_4_at_batch_1_and_odd_sizes(kind, runtime):
    model = tiny_model(kind)
    rt = registry.compile_for(model, runtime)
    for n, (h, w) in [(1, (48, 64)), (3, (48, 64)), (5, (40, 72))]:
        x = images(n, h, w)
        expected = model.encode(x)
        got = rt.encode(x)
        assert got.shape == expected.shape == (n, model.descriptor_dim) and got.dtype == torch.float32
        assert relative_error(got, expected) < 1e-4


def test_the_compiled_runtime_matches_eager_within_1e_4_at_an_odd_batch():
    # one compilation only (tens of seconds on a loaded 2-core machine): batch 3, channels_last
    model = tiny_model("gem")
    rt = registry.compile_for(model, "compile")
    x = images(3)
    assert relative_error(rt.encode(x), model.encode(x)) < 1e-4
    assert next(model.parameters()).is_contiguous()  # the user's model is not converted to channels_last


@pytest.mark.parametrize("kind", ["gem", "netvlad"])
def test_int8_stays_within_the_recorded_cosine_of_float32_at_batch_1_and_odd_sizes(kind):
    model = tiny_model(kind)
    rt = registry.compile_for(model, "onnx-int8", calibration=images(6, seed=2), require_vnni=False)
    for n in (1, 3, 7):
        x = images(n, seed=3 + n)
        cos = cosines(rt.encode(x), model.encode(x))
        assert cos.shape == (n,)
        assert float(cos.mean()) > INT8_MEAN_COS and float(cos.min()) > INT8_MIN_COS
    facts = rt.calibration
    assert facts["num_images"] == 6 and facts["format"] == "QDQ"
    assert facts["quantised_convs"] == 1 and facts["float32_convs"] == 2  # the first (image input) and the last
    assert facts["float32_conv_indices"] == [0, 2]  # (the aggregator's input): DEFAULT_FLOAT_CONVS
    assert facts["cosine_to_float32_on_calibration"]["min"] > INT8_MIN_COS


def test_int8_quantises_the_backbone_convolutions_and_keeps_the_aggregator_float32():
    onnx = pytest.importorskip("onnx")
    rt = registry.compile_for(tiny_model("netvlad"), "onnx-int8", calibration=images(4), require_vnni=False)
    nodes = onnx.load_from_string(rt.graph).graph.node
    dq_outputs = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    backbone = [n for n in convs if n.name.startswith("/backbone/")]
    others = [n for n in convs if not n.name.startswith("/backbone/")]  # NetVLAD's soft-assignment 1x1 conv
    assert len(backbone) == 3 and set(backbone[1].input[:2]) <= dq_outputs  # int8 input and weights
    # the first (it reads the image) and the last (whose output the aggregator reads) stay float32
    assert backbone[0].input[1] not in dq_outputs and backbone[2].input[1] not in dq_outputs
    assert others and not any(set(n.input) & dq_outputs for n in others)
    assert not any(set(n.input) & dq_outputs for n in nodes if n.op_type in ("MatMul", "Gemm", "Softmax"))


def test_int8_keeps_the_chosen_backbone_convolutions_float32():
    onnx = pytest.importorskip("onnx")
    model = tiny_model("gem")
    rt = registry.compile_for(model, "onnx-int8", calibration=images(4), require_vnni=False, int8_float_convs=(-2,))
    nodes = onnx.load_from_string(rt.graph).graph.node
    dq_outputs = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    backbone = [n for n in nodes if n.op_type == "Conv" and n.name.startswith("/backbone/")]
    assert [n.input[1] in dq_outputs for n in backbone] == [True, False, True]  # int8 weights: all but the middle
    facts = rt.calibration
    assert facts["float32_conv_indices"] == [1] and facts["quantised_convs"] == 2
    assert facts["float32_conv_names"] == [backbone[1].name]
    x = images(3, seed=11)
    assert float(cosines(rt.encode(x), model.encode(x)).min()) > INT8_MIN_COS


def test_a_backbone_too_small_for_the_default_keeps_only_its_last_convolution_float32():
    from registry.quantize import DEFAULT_FLOAT_CONVS, default_float_convs

    assert default_float_convs(13) == DEFAULT_FLOAT_CONVS == (0, -1) and default_float_convs(2) == (-1,)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Conv2d(8, 16, 3, padding=1))
    backbone.out_channels, backbone.stride = 16, 4
    model = registry.VPRModel(backbone, GeM(16), input_config=INPUT, config={"architecture": "two_convs"}).eval()
    rt = registry.compile_for(model, "onnx-int8", calibration=images(4), require_vnni=False)
    assert rt.calibration["float32_conv_indices"] == [1] and rt.calibration["quantised_convs"] == 1


@pytest.mark.parametrize("float_convs, message", [((3,), r"within -3\.\.2"), ((0, 1, -1), "nothing to quantise"),
                                                  (("last",), r"within -3\.\.2")])
def test_bad_float32_convolution_choices_name_the_valid_range(float_convs, message):
    with pytest.raises(ValueError, match=message):
        registry.compile_for(tiny_model("gem"), "onnx-int8", calibration=images(2), require_vnni=False,
                             int8_float_convs=float_convs)


def test_an_int8_runtime_saves_and_loads_with_its_config_and_calibration(tmp_path):
    model = tiny_model("gem")
    rt = registry.compile_for(model, "onnx-int8", calibration=images(4), require_vnni=False)
    path = rt.save(tmp_path / "tiny_int8.onnx")
    again = registry.load_runtime(path)
    x = images(3, seed=9)
    assert torch.equal(again.encode(x), rt.encode(x))
    assert again.kind == "onnx-int8" and again.calibration == rt.calibration
    assert again.config == model.config and again.input_config["input_size"] == [3, 48, 64]
    assert again.descriptor_dim == 16 and not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_export_onnx_writes_an_int8_runtime_from_image_files(tmp_path):
    from PIL import Image

    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray((torch.rand(60, 80, 3) * 255).byte().numpy()).save(files[-1])
    path = registry.export_onnx(tiny_model("gem"), tmp_path / "m.onnx", quantize="int8", calibration=files,
                                require_vnni=False)
    rt = registry.load_runtime(path)
    assert rt.kind == "onnx-int8" and rt.calibration["num_images"] == 3
    assert rt.calibration["source"] == f"3 image files from {tmp_path.name}"
    assert rt.calibration["input_size"] == [48, 64]  # preprocessed with the model's transform


def test_a_float32_export_loads_as_an_onnx_runtime(tmp_path):
    model = tiny_model("netvlad")
    rt = registry.load_runtime(registry.export_onnx(model, tmp_path / "m.onnx"))
    x = images(2)
    assert rt.kind == "onnx" and relative_error(rt.encode(x), model.encode(x)) < 1e-4


@pytest.mark.parametrize("runtime", ["torch", "onnx", "onnx-int8"])  # compile: see above
def test_every_runtime_gives_an_empty_batch_and_refuses_bad_images(runtime):
    model = tiny_model("gem")
    calibration = images(2) if runtime == "onnx-int8" else None
    rt = registry.compile_for(model, runtime, calibration=calibration, require_vnni=False)
    assert rt.encode(images(0)).shape == (0, 16)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        rt.encode(torch.randn(3, 48, 64))


def test_bad_runtime_requests_say_what_is_valid(tmp_path):
    model = tiny_model("gem")
    with pytest.raises(ValueError, match="choose one of torch, compile, onnx, onnx-int8"):
        registry.compile_for(model, "tensorrt")
    with pytest.raises(ValueError, match="needs calibration images"):
        registry.compile_for(model, "onnx-int8")
    with pytest.raises(ValueError, match="calibration needs real images"):
        registry.compile_for(model, "onnx-int8", calibration=[], require_vnni=False)
    (tmp_path / "plain.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no runtime file"):
        registry.load_runtime(tmp_path / "missing.onnx")


def test_a_cpu_without_int8_dot_products_is_refused_naming_the_fallback(tmp_path, monkeypatch):
    from registry import quantize

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    monkeypatch.setattr(quantize, "CPUINFO", str(cpuinfo))
    assert quantize.int8_support(cpuinfo) == (False, "none of avx512_vnni, avx_vnni, amx_int8, asimddp")
    with pytest.raises(registry.RuntimeUnavailableError, match=r"no int8 dot-product.*runtime='onnx'.*'torch'"):
        registry.compile_for(tiny_model("gem"), "onnx-int8", calibration=images(2))
    with pytest.raises(registry.RuntimeUnavailableError, match="require_vnni=False to run int8 anyway"):
        registry.export_onnx(tiny_model("gem"), tmp_path / "m.onnx", quantize="int8", calibration=images(2))
    assert not (tmp_path / "m.onnx").exists()
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512_vnni\n")
    assert quantize.int8_support(cpuinfo) == (True, "avx512_vnni")


def test_missing_onnxruntime_names_the_extra_and_the_torch_fallback():
    code = textwrap.dedent("""
        import sys
        sys.modules["onnxruntime"] = None  # as if it were not installed
        import torch, registry
        from registry.models.aggregators.gem import GeM
        from torch import nn
        model = registry.VPRModel(nn.Conv2d(3, 4, 3), GeM(4), config={"architecture": "x"},
                                  input_config={"input_size": (3, 32, 32), "mean": [0, 0, 0], "std": [1, 1, 1]})
        model.backbone.out_channels, model.backbone.stride = 4, 1
        try:
            registry.compile_for(model, "onnx")
        except ImportError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "needs the onnxruntime package" in out.stdout, out.stderr[-2000:]
    assert "pip install 'clusvpr-zoo[onnx]'" in out.stdout and "--runtime torch" in out.stdout


def test_a_release_runs_under_onnx_and_int8_at_a_small_input():
    model = registry.create("gem_vgg16", pretrained=True)
    model.input_config = {**model.input_config, "input_size": (3, 64, 96)}
    x = images(3, 64, 96)
    expected = model.encode(x)
    assert relative_error(registry.compile_for(model, "onnx").encode(x), expected) < 1e-4
    rt = registry.compile_for(model, "onnx-int8", calibration=images(4, 64, 96, seed=5), require_vnni=False)
    cos = cosines(rt.encode(x), expected)
    assert float(cos.min()) > 0.98  # real weights, random-noise input: measured 0.993 worst of 3 when written


def _png_folder(folder, n: int):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(4)
    for i in range(n):
        Image.fromarray((torch.rand(60, 80, 3, generator=g) * 255).byte().numpy()).save(folder / f"{i}.png")
    return folder


def test_vpr_export_quantize_int8_writes_a_runtime_calibrated_on_a_folder(tmp_path, capsys):
    from registry.cli.export import main

    folder = _png_folder(tmp_path / "map", 5)
    out = tmp_path / "gem_int8.onnx"
    assert main(["gem_vgg16", str(out), "--input-size", "64", "64", "--quantize", "int8", "--calibration",
                 str(folder), "--calibration-images", "3", "--allow-no-vnni", "--int8-float-convs", "-1"]) == 0
    assert "int8: 12 convolutions quantised (float32: 12), MinMax ranges from 3 images" in capsys.readouterr().out
    rt = registry.load_runtime(out)
    assert rt.kind == "onnx-int8" and rt.calibration["source"] == "3 image files from map"
    assert rt.calibration["float32_conv_indices"] == [12]  # VGG16's last of 13 only, as asked (default: 0 and 12)
    assert rt.encode(images(2, 64, 64)).shape == (2, 512)


@pytest.mark.parametrize("argv, message", [
    (["--quantize", "int8"], "--quantize int8 needs --calibration"),
    (["--calibration", "x"], "--calibration is for --quantize int8"),
    (["--int8-float-convs", "0"], "--int8-float-convs is for --quantize int8"),
    (["--quantize", "int8", "--calibration", "no_such_folder"], "neither an image file nor a folder"),
])
def test_vpr_export_refuses_incomplete_int8_options(argv, message, tmp_path, capsys, monkeypatch):
    from registry.cli.export import main

    monkeypatch.chdir(tmp_path)
    assert main(["gem_vgg16", "m.onnx", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
