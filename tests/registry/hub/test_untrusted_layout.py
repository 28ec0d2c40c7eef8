"""A saved layout's config.json and model.safetensors are read within limits: a crafted file (a huge string, deep
nesting, a 5000-digit number, a malformed safetensors header with a matching sha256) is a named error that says
which file and what to do, not a RecursionError, a bare ValueError or SafetensorError, or gigabytes of memory."""
from __future__ import annotations

import json
import struct

import pytest

import registry
import registry.hub as hub


def _saved(tiny, tmp_path):
    model, _ = tiny
    return hub.save_pretrained(model, tmp_path / "m")


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace('"architecture": "', '"architecture": "' + "x" * (50 << 20), 1),
     r"config.json of .* is 52,4\d\d,\d\d\d bytes, more than the 1,048,576 a file of this kind can be"),
    (lambda text: text.rstrip()[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}",
     r"config.json of .* nests 100001 levels of lists and objects, more than the 32"),
    (lambda text: text.rstrip()[:-1] + ', "format_version": ' + "9" * 5000 + "}",
     r"config.json of .* holds a number of 5000 characters"),
], ids=["50 MB architecture", "deep nesting", "5000-digit number"])
def test_a_crafted_config_json_is_refused_by_the_bounded_reader_naming_the_file(tiny, tmp_path, edit, message):
    folder = _saved(tiny, tmp_path)
    config = folder / "config.json"
    config.write_text(edit(config.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(hub.WrongModelError, match=message + r".*save_pretrained / push_to_hub"):
        registry.VPRModel.from_pretrained(folder)


def _with_weights(folder, data: bytes) -> None:
    (folder / "model.safetensors").write_bytes(data)
    config = json.loads((folder / "config.json").read_text())
    config["files"]["model.safetensors"]["sha256"] = hub.sha256_file(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))


def _header(data: bytes):
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8:8 + length])


def _pack(header: dict, length: int, rest: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= length
    return struct.pack("<Q", length) + text + b" " * (length - len(text)) + rest


@pytest.mark.parametrize("damage, message", [
    ("not json", r"the safetensors header of .*model.safetensors is not valid JSON"),
    ("offsets past the end", r"gives tensor '.*' \(shape \[.*\], F32\) the bytes \d+\.\.\d+ of a [\d,]+-byte"),
    ("header longer than the file", r"declares a safetensors header of 18,446,744,073,709,551,615 bytes"),
    ("unknown dtype", r"describes tensor '.*' as .*'dtype': 'Q64'.*not a dtype, shape and data offsets"),
    # the trust sweep's raw SafetensorError ('invalid offset'): every entry fits, the entries do not tile the data
    ("a tensor dropped", r"starts tensor '.*' at byte \d+ of its data section, where the tensors before it end at 0"),
    ("the last tensor dropped", r"describes [\d,]+ bytes of tensors in a [\d,]+-byte data section"),
], ids=["not json", "offsets past the end", "header longer than the file", "unknown dtype", "a tensor dropped",
        "the last tensor dropped"])
def test_a_malformed_safetensors_header_with_a_matching_sha256_names_the_file(tiny, tmp_path, damage, message):
    folder = _saved(tiny, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    length, header = _header(data)
    rest = data[8 + length:]
    name = next(k for k in header if k != "__metadata__")
    if damage == "not json":
        data = data[:8] + b"X" + data[9:]
    elif damage == "offsets past the end":
        header[name]["data_offsets"][1] = len(rest) + 64
        data = _pack(header, length, rest)
    elif damage == "header longer than the file":
        data = struct.pack("<Q", 2 ** 64 - 1) + data[8:]
    elif damage == "a tensor dropped":
        first = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        del header[first]
        data = _pack(header, length, rest)
    elif damage == "the last tensor dropped":
        del header[max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])]
        data = _pack(header, length, rest)
    else:
        header[name]["dtype"] = "Q64"
        data = _pack(header, length, rest)
    _with_weights(folder, data)
    with pytest.raises(hub.IncompatibleWeightsError, match=message + r".*download it again or restore a good copy"):
        registry.VPRModel.from_pretrained(folder)


def test_a_layout_saved_by_the_zoo_still_loads_through_the_bounded_readers(tiny, tmp_path):
    model, x = tiny
    loaded = registry.VPRModel.from_pretrained(_saved(tiny, tmp_path))
    assert (loaded.encode(x) - model.encode(x)).abs().max() < 1e-6


@pytest.mark.parametrize("load", ["unregistered", "create another model"])
def test_a_long_architecture_string_is_quoted_shortened_in_every_message(tiny, tmp_path, load):
    """A 900 KB `architecture` (inside the bounded reader's 1 MiB) was quoted in full, twice, in the messages of
    registry/models' config check: now its first 80 characters and its length."""
    folder = _saved(tiny, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = ("gem_vgg16" if load == "create another model" else "x") * 100_000
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.WrongModelError) as err:
        if load == "create another model":
            registry.create("netvlad_vgg16", pretrained=str(folder))
        else:
            registry.VPRModel.from_pretrained(folder)
    message = str(err.value)
    assert len(message) < 2000 and "characters)" in message, message[:300]
