"""Files the zoo reads are checked before they are believed: runtime files (.onnx), their metadata, images, HDF5
centres, JSON. Each test builds the damaged or crafted file as real bytes; a memory bound is asserted in a forked
child whose address space is capped (RLIMIT_AS), so an allocation past the cap fails there instead of passing."""
from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import registry
from registry._util import h5io
from registry._util.image_modes import to_rgb
from registry._util.jsonio import BoundedJSONError, loads_bounded, quote, read_json
from registry.datasets.images import ImageReadError, image_size, open_rgb
from registry.errors import NonFiniteOutputError
from registry.export import graph_sha256, relative_error, verify_onnx

onnx = pytest.importorskip("onnx", reason="the runtime file tests need the onnx extra: pip install -e '.[onnx]'")
pytest.importorskip("onnxruntime", reason="the runtime file tests need the onnx extra: pip install -e '.[onnx]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_runtimes import images, tiny_model  # noqa: E402  (tests/registry is on sys.path)

from registry.runtimes import RuntimeFileError  # noqa: E402

MIB = 1 << 20


def run_capped(fn, cap_bytes: int):
    """fn() in a forked child whose address space may grow by at most `cap_bytes` beyond what it starts with:
    ("ok", its result) or ("raised", exception type name, message)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            with open("/proc/self/status") as fh:
                vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
            resource.setrlimit(resource.RLIMIT_AS, (vm + cap_bytes, vm + cap_bytes))
            try:
                outcome = ("ok", fn())
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                outcome = ("raised", type(err).__name__, str(err)[:2000])
            data = pickle.dumps(outcome)
        except BaseException as err:  # noqa: BLE001
            data = pickle.dumps(("raised", type(err).__name__, str(err)[:2000]))
        with os.fdopen(write, "wb") as fh:
            fh.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


# ---------------------------------------------------------------------------------------------- runtime files


@pytest.fixture(scope="module")
def runtime_file(tmp_path_factory) -> Path:
    """A float32 runtime of the tiny GeM model (16-d), as registry.export_onnx writes it."""
    return registry.export_onnx(tiny_model("gem"), tmp_path_factory.mktemp("rt") / "tiny.onnx")


def _edited(runtime_file: Path, target: Path, edit, rehash: bool = True) -> Path:
    """The runtime file edited; `rehash`: its recorded graph_sha256 recomputed for the edited graph, as a crafted
    file would have it, so the edit reaches the checks behind the hash."""
    proto = onnx.load(str(runtime_file))
    edit(proto)
    prop = next((p for p in proto.metadata_props if p.key == "vpr_runtime"), None)
    try:
        meta = json.loads(prop.value) if rehash and prop is not None else None
    except (ValueError, RecursionError):  # metadata the edit made unreadable: nothing to recompute
        meta = None
    if isinstance(meta, dict):
        meta["graph_sha256"] = graph_sha256(proto)
        prop.value = json.dumps(meta)
    target.write_bytes(proto.SerializeToString())
    return target


def _set_meta(proto, **changes) -> None:
    prop = next(p for p in proto.metadata_props if p.key == "vpr_runtime")
    meta = json.loads(prop.value)
    for key, value in changes.items():
        if key == "input_size":
            meta["input_config"]["input_size"] = value
        else:
            meta[key] = value
    prop.value = json.dumps(meta)


def test_an_initializer_with_external_data_is_refused_before_onnxruntime_reads_the_file(runtime_file, tmp_path,
                                                                                         monkeypatch):
    # onnxruntime refuses absolute and ../ locations, not a relative name: it would read secret.bin from the working
    # directory into the weights, and its bytes would come back inside the descriptors
    def externalise(proto):
        t = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
        size = len(t.raw_data)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", str(size))):
            t.external_data.add(key=key, value=value)
        (tmp_path / "cwd" / "secret.bin").write_bytes(b"password=hunter2;" * (size // 17 + 1))

    (tmp_path / "cwd").mkdir()
    path = _edited(runtime_file, tmp_path / "external.onnx", externalise)
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(RuntimeFileError, match=r"external.onnx stores the data of its initializer .* outside the "
                                               r"file \(location 'secret.bin'\).*vpr export"):
        registry.load_runtime(path)


def _through(proto, op: str, domain: str) -> None:
    """The graph's descriptors passed through one node of `op` in `domain` (named after the op, lower case)."""
    out = proto.graph.output[0].name
    proto.graph.node[-1].output[0] = "raw"
    proto.graph.node.append(helper.make_node(op, ["raw"], [out], name=op.lower(), domain=domain))
    proto.opset_import.append(helper.make_opsetid(domain, 1))


def test_a_node_of_a_custom_op_domain_is_refused_naming_the_file_and_the_fix(runtime_file, tmp_path):
    def add_custom(proto):
        _through(proto, "Leak", "evil.ops")

    path = _edited(runtime_file, tmp_path / "custom.onnx", add_custom)
    with pytest.raises(RuntimeFileError, match=r"custom.onnx has node 'leak' of op 'Leak' in domain 'evil.ops'"):
        registry.load_runtime(path)


def test_a_graph_defining_a_local_function_is_refused(runtime_file, tmp_path):
    def add_function(proto):
        body = [helper.make_node("Identity", ["x"], ["y"])]
        proto.functions.append(helper.make_function("local.fns", "Pass", ["x"], ["y"], body,
                                                    [helper.make_opsetid("", 17)]))
        _through(proto, "Pass", "local.fns")

    path = _edited(runtime_file, tmp_path / "function.onnx", add_function)
    with pytest.raises(RuntimeFileError, match=r"function.onnx defines 1 local function\(s\) \(\['Pass'\]\)"):
        registry.load_runtime(path)


@pytest.mark.parametrize("damage", ["truncated", "text", "empty graph"])
def test_a_broken_onnx_file_is_one_runtime_error_naming_the_file_and_the_fix(runtime_file, tmp_path, damage):
    path = tmp_path / f"{damage.replace(' ', '_')}.onnx"
    data = runtime_file.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "text":
        path.write_text("this is not a graph\n" * 20)
    else:  # valid protobuf and metadata, no graph
        _edited(runtime_file, path, lambda proto: proto.graph.Clear())
    with pytest.raises(RuntimeFileError, match=rf"{path.name}.*re-export the model with `vpr export`"):
        registry.load_runtime(path)


def test_nan_descriptors_of_an_onnx_runtime_raise_non_finite_output_error(runtime_file, tmp_path):
    def poison(proto):
        floats = [t for t in proto.graph.initializer if len(t.dims) == 1 and t.data_type == TensorProto.FLOAT]
        t = next((t for t in floats if "bias" in t.name), floats[0])  # a convolution's bias
        values = numpy_helper.to_array(t).copy()
        values[0] = np.nan
        t.CopyFrom(numpy_helper.from_array(values, t.name))

    rt = registry.load_runtime(_edited(runtime_file, tmp_path / "nan.onnx", poison))
    with pytest.raises(NonFiniteOutputError, match=r"nan.onnx \(onnx\) gave NaN or Inf descriptors for 2 of 2"):
        rt.encode(images(2))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, as registry.export uses it
def test_the_export_verify_step_fails_on_nan_descriptors(tmp_path):
    class NaNHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor([1.0, float("nan"), 1.0]))

        def forward(self, x):
            return x.mean((2, 3)) * self.scale

    model, path = NaNHead().eval(), tmp_path / "nan.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["images"],
                      output_names=["descriptors"], dynamic_axes={"images": {0: "batch"}})
    with pytest.raises(RuntimeError, match=r"differs from PyTorch by nan relative"):
        verify_onnx(model, path, [(1, 8, 8), (2, 8, 8)])


@pytest.mark.parametrize("shape", [[None, 17], [None, 16, 1, 1]])
def test_a_declared_output_shape_other_than_n_by_descriptor_dim_is_refused_at_load(runtime_file, tmp_path, shape):
    def reshape(proto):
        dims = proto.graph.output[0].type.tensor_type.shape
        dims.ClearField("dim")
        for value in shape:
            dim = dims.dim.add()
            if value is None:
                dim.dim_param = "batch"
            else:
                dim.dim_value = value

    path = _edited(runtime_file, tmp_path / "shape.onnx", reshape)
    with pytest.raises(RuntimeFileError, match=r"shape.onnx gives 'descriptors' of shape \['batch', 17\]|"
                                               r"shape.onnx gives 'descriptors' of shape \['batch', 16, 1, 1\]"):
        registry.load_runtime(path)


def test_a_runtime_whose_output_differs_from_its_recorded_descriptor_dim_is_refused(runtime_file, tmp_path):
    path = _edited(runtime_file, tmp_path / "dim.onnx", lambda proto: _set_meta(proto, descriptor_dim=32))
    rt = registry.load_runtime(path)  # the exporter leaves the output width symbolic: the first batch tells
    with pytest.raises(RuntimeFileError, match=r"dim.onnx gave 'descriptors' of shape \[2, 16\] for 2 images, not "
                                               r"\(2, 32\)"):
        rt.encode(images(2))


@pytest.mark.parametrize("size, message", [
    ([3, 12000, 12000], r"input_size \[3, 12000, 12000\] is not \[3, H, W\] with H and W 2 integers in 1\.\.8192"),
    ([3, 8000, 8000], r"input_size 8000x8000 is 64,000,000 pixels, more than the 16,777,216"),
    ([3, -5, 64], r"input_size \[3, -5, 64\] is not"),
    ("big", r"input_size 'big' is not"),
])
def test_a_runtime_input_size_outside_the_documented_range_is_refused_at_load(runtime_file, tmp_path, size, message):
    path = _edited(runtime_file, tmp_path / "size.onnx", lambda proto: _set_meta(proto, input_size=size))
    with pytest.raises(RuntimeFileError, match=message):
        registry.load_runtime(path)


def test_a_giant_statically_shaped_constant_is_refused_before_encode_allocates_it(runtime_file, tmp_path):
    def add_constant(proto):  # descriptors + mean(ConstantOfShape([15000, 15000])): 900 MB of zeros per batch
        out = proto.graph.output[0].name
        proto.graph.node[-1].output[0] = "raw"
        proto.graph.initializer.append(numpy_helper.from_array(np.array([15000, 15000], np.int64), "giant_shape"))
        proto.graph.node.extend([
            helper.make_node("ConstantOfShape", ["giant_shape"], ["zeros"], name="giant",
                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("ReduceMean", ["zeros"], ["zero"], keepdims=0),
            helper.make_node("Add", ["raw", "zero"], [out]),
        ])

    path = _edited(runtime_file, tmp_path / "giant.onnx", add_constant)
    with pytest.raises(RuntimeFileError, match=r"giant.onnx has a ConstantOfShape node 'giant' of shape "
                                               r"\[15000, 15000\], more than the 67,108,864 values"):
        registry.load_runtime(path)


@pytest.mark.parametrize("text, message", [
    ("[" * 100000 + "]" * 100000, r"nests 100000 levels"),
    ('{"kind": "onnx", "descriptor_dim": ' + "9" * 5000 + "}", r"holds a number of 5000 characters"),
    ("{not json", r"is not valid JSON"),
], ids=["deep", "long number", "not json"])
def test_runtime_metadata_that_is_deep_long_or_not_json_is_refused_naming_the_file(runtime_file, tmp_path, text,
                                                                                     message):
    def set_text(proto):
        next(p for p in proto.metadata_props if p.key == "vpr_runtime").value = text

    path = _edited(runtime_file, tmp_path / "meta.onnx", set_text)
    with pytest.raises(RuntimeFileError, match=rf"the 'vpr_runtime' metadata of .*meta.onnx {message}"):
        registry.load_runtime(path)


def test_a_runtime_file_written_by_export_still_loads_and_encodes_as_before(runtime_file):
    rt, model = registry.load_runtime(runtime_file), tiny_model("gem")
    x = images(3, seed=4)
    assert rt.descriptor_dim == 16 and rt.encode(x).shape == (3, 16)
    assert relative_error(rt.encode(x), model.encode(x)) < 1e-4


def _flip_inside_the_largest_weight(runtime_file: Path, target: Path) -> Path:
    """The runtime file with one byte flipped in the middle of its largest initializer's bytes (found in the file by
    those bytes), nothing else changed: still a valid graph."""
    proto = onnx.load(str(runtime_file))
    weights = max(proto.graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    data = bytearray(runtime_file.read_bytes())
    at = bytes(data).index(weights) + len(weights) // 2
    data[at] ^= 0x40
    target.write_bytes(bytes(data))
    return target


def test_a_byte_flipped_inside_a_runtime_weight_is_refused_by_the_graph_sha256_its_metadata_records(runtime_file,
                                                                                                    tmp_path):
    """A flipped weight byte keeps the graph valid: without the recorded graph_sha256 (the field removed) the same
    file loads and gives other descriptors than the intact one (the trust sweep's silent case); with it, a
    RuntimeFileError naming the file before onnxruntime runs it."""
    flipped = _flip_inside_the_largest_weight(runtime_file, tmp_path / "flipped.onnx")
    with pytest.raises(RuntimeFileError, match=r"flipped.onnx does not match the graph_sha256 its metadata records"):
        registry.load_runtime(flipped)
    unhashed = _edited(flipped, tmp_path / "unhashed.onnx", lambda p: _drop_meta(p, "graph_sha256"), rehash=False)
    x = images(2, seed=3)
    assert not torch.equal(registry.load_runtime(unhashed).encode(x), registry.load_runtime(runtime_file).encode(x))


def _drop_meta(proto, key: str) -> None:
    prop = next(p for p in proto.metadata_props if p.key == "vpr_runtime")
    meta = json.loads(prop.value)
    del meta[key]
    prop.value = json.dumps(meta)


# --------------------------------------------------------------------------------------------------------- JSON


def test_a_50_mb_json_string_is_read_within_a_memory_cap():
    """The depth count skips strings with a regex: one repetition per character cost ~6 GB and 29 s for a 50 MB
    string (the sweep's places.json with a 50 MB field, within its 1 GiB size limit); now it is read in a child whose
    address space may grow by 512 MiB."""
    text = '{"format": "' + "a" * (50 * MIB) + '", "list": [[["x\\"y"]]]}'
    outcome = run_capped(lambda: (len(loads_bounded(text, "t", max_bytes=1 << 30)["format"]),
                                  _depth_of(text)), 512 * MIB)
    assert outcome == ("ok", (50 * MIB, 4)), outcome[:3]


def _depth_of(text: str) -> int:
    from registry._util.jsonio import _depth

    return _depth(text)


@pytest.mark.parametrize("text, message", [
    ("[" * 50000 + "]" * 50000, r"places.json nests 50000 levels of lists and objects, more than the 32"),
    ('{"count": ' + "7" * 5000 + "}", r"places.json holds a number of 5000 characters \(77777777777777777777\.\.\.\)"),
    ('{"x": 1e' + "9" * 60 + "}", r"places.json holds a number of 62 characters"),
    ('{"path": "a"', r"places.json is not valid JSON"),
    (b'{"a": "\xff"}', r"places.json is not UTF-8 text"),
], ids=["deep", "long int", "long float", "not json", "not utf-8"])
def test_the_bounded_json_reader_names_the_file_the_problem_and_the_fix(tmp_path, text, message):
    path = tmp_path / "places.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(BoundedJSONError, match=message + r".*restore or re-create"):
        read_json(path)


def test_the_bounded_json_reader_refuses_a_large_file_before_reading_it_and_reads_what_the_zoo_writes(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"architecture": "x" * (2 * MIB)}))
    with pytest.raises(BoundedJSONError, match=r"config.json is 2,097,172 bytes, more than the 1,048,576"):
        read_json(path)
    value = {"a": [1, 2.5, -3e-7, None, True, "\u00e9\"[{"], "nested": {"b": [[{"c": 1.0}]]}, "big": 2 ** 63}
    path.write_text(json.dumps(value))
    assert read_json(path) == value
    path.write_text('{"mean": [NaN, 0.5, Infinity]}')  # refused by the range checks that read it, not here
    mean = read_json(path)["mean"]
    assert np.isnan(mean[0]) and mean[1:] == [0.5, float("inf")]
    assert loads_bounded(json.dumps([[[1]]]), "x", max_depth=3) == [[[1]]]
    with pytest.raises(BoundedJSONError, match="x nests 4 levels"):
        loads_bounded(json.dumps([[[[1]]]]), "x", max_depth=3)
    assert quote("y" * 1000) == repr("y" * 1000)[:80] + "... (1002 characters)"


# ------------------------------------------------------------------------------------------------------- images


def _png16(path: Path, width: int, height: int) -> Path:
    """A 16-bit greyscale PNG of zeros, written row by row (small on disk, width x height x 2 bytes decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row, parts = zlib.compressobj(9), b"\0" * (1 + 2 * width), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


def test_a_16_bit_image_inside_pillows_limit_but_over_the_pixel_budget_is_refused_before_decoding(tmp_path):
    path = _png16(tmp_path / "huge16.png", 13000, 13000)  # 169 MP: under Pillow's 179 MP, 3.2 GB once converted
    assert path.stat().st_size < 1 * MIB
    outcome = run_capped(lambda: open_rgb(path).size, 512 * MIB)
    assert outcome[:2] == ("raised", "ImageReadError"), outcome
    assert "huge16.png is 13000x13000 = 169,000,000 pixels, more than the 64,000,000" in outcome[2]
    assert "VPR_MAX_IMAGE_PIXELS" in outcome[2]


def test_the_pixel_budget_can_be_raised_and_a_bad_budget_is_named(tmp_path, monkeypatch):
    path = _png16(tmp_path / "wide.png", 300, 200)
    monkeypatch.setenv("VPR_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(ImageReadError, match=r"wide.png is 300x200 = 60,000 pixels, more than the 50,000"):
        open_rgb(path)
    monkeypatch.setenv("VPR_MAX_IMAGE_PIXELS", "60000")
    assert open_rgb(path).size == (300, 200)
    monkeypatch.setenv("VPR_MAX_IMAGE_PIXELS", "inf")
    with pytest.raises(ValueError, match="VPR_MAX_IMAGE_PIXELS='inf' is not a positive whole number"):
        open_rgb(path)


def test_a_decompression_bomb_is_an_image_error_naming_the_path(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # Pillow raises above twice its limit
    with pytest.raises(ImageReadError, match=r"cannot read image .*bomb.png .*decompression bomb"):
        open_rgb(path)
    with pytest.raises(ImageReadError, match=r"cannot read image .*bomb.png"):
        image_size(path)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_conversion_in_integers_equals_the_float64_rounding_for_every_value(mode):
    values = np.arange(65536, dtype=np.uint16 if mode == "I;16" else np.int32).reshape(256, 256)
    img = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values, mode="I")
    assert img.mode == mode
    got = np.asarray(to_rgb(img))
    reference = np.rint(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    assert got.shape == (256, 256, 3) and all(np.array_equal(got[..., c], reference) for c in range(3))


# ------------------------------------------------------------------------------------------------------ HDF5


def test_a_small_h5_declaring_huge_centroids_is_refused_from_its_shape_before_reading(tmp_path):
    path = tmp_path / "centroids.h5"
    with h5py.File(path, "w") as f:  # chunked and never written: a 20000 x 20000 float32 of fill values
        f.create_dataset("centroids", shape=(20000, 20000), dtype="f4", chunks=(1000, 1000), compression="gzip")
        f.create_dataset("descriptors", data=np.zeros((4, 20000), np.float32))
    assert path.stat().st_size < 1 * MIB
    outcome = run_capped(lambda: tuple(t.shape for t in h5io.load_centroids(path)), 512 * MIB)
    assert outcome[:2] == ("raised", "ValueError"), outcome
    assert "centroids.h5: 'centroids' declares shape (20000, 20000) (400,000,000 values), more than" in outcome[2]


def test_a_small_pca_h5_declaring_a_huge_projection_is_refused_from_its_shape(tmp_path):
    path = tmp_path / "pca.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("U", shape=(20000, 20000), dtype="f8", chunks=(1000, 1000), compression="gzip")
        for key in ("lams", "mu", "Utmu"):
            f.create_dataset(key, data=np.ones(20000, np.float32))
    outcome = run_capped(lambda: [a.shape for a in h5io.read_pca(path)], 512 * MIB)  # 3.2 GB if U were read
    assert outcome[:2] == ("raised", "ValueError"), outcome
    assert "pca.h5: 'U' declares shape (20000, 20000) (400,000,000 values)" in outcome[2]


@pytest.mark.parametrize("centroids, descriptors, message", [
    ((2000, 8), (4, 8), r"centroids \(2000, 8\) are not K x D with K in 1\.\.1024"),
    ((8, 4), (4, 5), r"centroids \(8, 4\) and descriptors \(4, 5\) must be 2-D with equal widths"),
    ((2, 2, 2), (4, 2), r"'centroids' is a 3-D dataset of float32, not a 1-D or 2-D array"),
])
def test_h5_centroid_shapes_are_checked_before_their_data_is_read(tmp_path, centroids, descriptors, message):
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("centroids", data=np.zeros(centroids, np.float32))
        f.create_dataset("descriptors", data=np.zeros(descriptors, np.float32))
    with pytest.raises(ValueError, match=message):
        h5io.load_centroids(path)


def test_an_h5_dataset_of_strings_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("centroids", data=np.array([b"abc", b"def"]))
        f.create_dataset("descriptors", data=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"'centroids' is a 1-D dataset of \|S3, not a 1-D or 2-D array of numbers"):
        h5io.load_centroids(path)
