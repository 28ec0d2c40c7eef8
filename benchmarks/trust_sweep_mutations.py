"""The trust sweep's mutations: each changes a copy of one artefact in a case folder (`root`, holding the copied
artefact under `a/`, a secret file and a sentinel beside it) and is named by a kind and its arguments, so a case is
reproduced from its JSON record alone. Hashes the layout records are recomputed where a case says so (`rehash`),
so that the mutation reaches the checks behind the hash instead of stopping at it."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

SECRET = "secret.bin"
SECRET_MARK = "TRUSTSWEEPSECRET"
BIG_DIGITS = "9" * 5000
DEEP = 100_000


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ generic bytes
def flip(path: Path, frac: float) -> None:
    data = bytearray(path.read_bytes())
    at = min(len(data) - 1, int(frac * len(data)))
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate(path: Path, frac: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(frac * len(data))] if frac < 1 else data[:-1])


def delete(path: Path) -> None:
    path.unlink() if path.is_file() or path.is_symlink() else shutil.rmtree(path)


def garbage(path: Path, seed: int = 0) -> None:
    path.write_bytes(np.random.default_rng(seed).bytes(max(16, path.stat().st_size)))


def append(path: Path, size: int = 4096) -> None:
    with open(path, "ab") as fh:
        fh.write(np.random.default_rng(size).bytes(size))


def symlink_secret(path: Path) -> None:
    """The file replaced by a link to the secret file outside the artefact (in the case folder, the cwd)."""
    delete(path)
    os.symlink(os.path.relpath(_root(path) / SECRET, path.parent), path)


def symlink_copy(path: Path) -> None:
    """The file moved outside the artefact folder and linked back (the same bytes)."""
    outside = _root(path) / f"outside-{path.name}"
    shutil.move(str(path), outside)
    os.symlink(outside, path)


def to_dir(path: Path) -> None:
    delete(path)
    path.mkdir()


def _root(path: Path) -> Path:
    """The case folder above `path` (the one holding the secret)."""
    return next(p for p in path.parents if (p / SECRET).exists())


# ------------------------------------------------------------------------------------------------ JSON
BAD_VALUES: Dict[str, Any] = {"str": "x", "obj": {}, "list": [], "null": None, "true": True, "neg": -1, "zero": 0,
                              "float": 1e308, "huge": 2**62, "nan": float("nan"), "inf": float("inf"),
                              "outside": "../../secret.bin", "big": "BIG"}


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _dump_json(path: Path, value: Any) -> None:
    text = json.dumps(value, allow_nan=True)
    path.write_text(text.replace('"BIG"', BIG_DIGITS))


def _walk(obj: Any, keys: List[Any]):
    for key in keys[:-1]:
        obj = obj[key]
    return obj


def json_set(path: Path, keys: List[Any], value: str) -> None:
    """One field (keys: its path) set to a bad value (BAD_VALUES[value]); 'BIG' becomes a 5000-digit number."""
    doc = _load_json(path)
    _walk(doc, keys)[keys[-1]] = BAD_VALUES[value]
    _dump_json(path, doc)


def json_drop(path: Path, keys: List[Any]) -> None:
    doc = _load_json(path)
    del _walk(doc, keys)[keys[-1]]
    _dump_json(path, doc)


def json_deep(path: Path) -> None:
    path.write_text("[" * DEEP + "]" * DEEP)


def json_bignum(path: Path) -> None:
    path.write_text('{"count": ' + BIG_DIGITS + "}")


def json_huge_string(path: Path, key: str, size: int = 50 << 20) -> None:
    doc = _load_json(path)
    doc[key] = "a" * size
    _dump_json(path, doc)


def json_paths(doc: Any, prefix=(), depth: int = 3) -> List[List[Any]]:
    """Every field path of a JSON document down to `depth` (lists: their first item)."""
    out = []
    items = doc.items() if isinstance(doc, dict) else ([(0, doc[0])] if isinstance(doc, list) and doc else [])
    for key, value in items:
        out.append([*prefix, key])
        if depth > 1:
            out += json_paths(value, (*prefix, key), depth - 1)
    return out


# ------------------------------------------------------------------------------------------------ hashes
def rehash(folder: Path) -> None:
    """Every sha256 (and size) a model, index or map folder records, recomputed from its files as they are now."""
    for model_cfg in [folder / "config.json", folder / "model" / "config.json"]:
        if model_cfg.is_file():
            doc = _load_json(model_cfg)
            for name, entry in doc.get("files", {}).items():
                if (model_cfg.parent / name).is_file():
                    entry.update(sha256=_sha(model_cfg.parent / name), size=(model_cfg.parent / name).stat().st_size)
            _dump_json(model_cfg, doc)
    for places in [p for p in [folder / "places.json", *folder.glob("index/*/places.json")] if p.is_file()]:
        doc = _load_json(places)
        if (places.parent / "index.faiss").is_file():
            doc["index_sha256"] = _sha(places.parent / "index.faiss")
        if isinstance(doc.get("vectors"), dict) and (places.parent / "vectors.f16").is_file():
            doc["vectors"]["sha256"] = _sha(places.parent / "vectors.f16")
        _dump_json(places, doc)
    for graph in folder.glob("*.onnx"):
        _rehash_onnx(graph)
    if (folder / "manifest.json").is_file():
        doc = _load_json(folder / "manifest.json")
        doc["files"] = {name: _sha(folder / name) for name in doc.get("files", {}) if (folder / name).is_file()}
        _dump_json(folder / "manifest.json", doc)


def _rehash_onnx(path: Path) -> None:
    """The graph_sha256 a runtime file's metadata records, recomputed for its graph as it is now."""
    import onnx

    from registry.export import GRAPH_SHA256, RUNTIME_META, graph_sha256

    proto = onnx.load(str(path), load_external_data=False)  # a graph the case gave external data stays as it is
    prop = next(p for p in proto.metadata_props if p.key == RUNTIME_META)
    meta = json.loads(prop.value)
    if isinstance(meta, dict):
        meta[GRAPH_SHA256] = graph_sha256(proto)
        prop.value = json.dumps(meta)
        onnx.save(proto, str(path))


# ------------------------------------------------------------------------------------------------ safetensors
def _st_read(path: Path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _st_write(path: Path, header: Dict[str, Any], body: bytes, length: int = None) -> None:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + body)


def _first_float(header: Dict[str, Any]) -> str:
    return next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"
                and v["data_offsets"][1] - v["data_offsets"][0] >= 16)


def st_edit(path: Path, edit: str) -> None:
    """A safetensors file with a NaN tensor, a huge declared shape, a huge header length, another dtype, a missing
    tensor or overlapping offsets (its recorded sha256 recomputed by the case)."""
    header, body = _st_read(path)
    name = _first_float(header)
    entry = header[name]
    if edit == "nan":
        lo, hi = entry["data_offsets"]
        body = body[:lo] + np.full((hi - lo) // 4, np.nan, np.float32).tobytes() + body[hi:]
    elif edit == "shape":
        entry["shape"] = [1 << 31, 1 << 31]
    elif edit == "dtype":
        entry["dtype"] = "F64"
    elif edit == "drop":
        del header[name]
    elif edit == "offsets":
        entry["data_offsets"] = [0, len(body) * 4]
    _st_write(path, header, body, length=(1 << 62) if edit == "header_length" else None)


# ------------------------------------------------------------------------------------------------ HDF5
def h5_edit(path: Path, edit: str) -> None:
    """Each dataset of an HDF5 file with NaN values, or replaced by one declaring a huge shape (nothing written),
    another dtype, or removed."""
    import h5py

    with h5py.File(path, "r+") as fh:
        names = list(fh.keys())
        for name in names[:1] if edit == "drop" else names:
            data = fh[name][()]
            del fh[name]
            if edit == "nan":
                fh[name] = np.full_like(data, np.nan, dtype=np.float32) if data.ndim else np.float32("nan")
            elif edit == "shape":
                fh.create_dataset(name, shape=(20000, 20000), dtype="float32", chunks=(64, 64))
            elif edit == "dtype":
                fh[name] = np.asarray(data).astype("S8") if data.ndim else b"x"


def vectors_nan(path: Path) -> None:
    """The first row of a float16 vectors file set to NaN."""
    data = np.frombuffer(path.read_bytes(), np.float16).copy()
    data[:8] = np.nan
    path.write_bytes(data.tobytes())


def faiss_swap(path: Path, other: Path) -> None:
    """index.faiss replaced by another saved index's (a valid faiss file of another kind)."""
    shutil.copy(other / "index.faiss", path)


# ------------------------------------------------------------------------------------------------ Lance store
def lance_meta(folder: Path, changes: Dict[str, Any] = None, raw: str = None) -> None:
    """The store's clusvpr_map metadata changed (fields set, or replaced by `raw` text) in a new Lance commit."""
    import lance

    ds = lance.dataset(str(folder))
    meta = json.loads(ds.schema.metadata[b"clusvpr_map"])
    text = raw if raw is not None else json.dumps({**meta, **(changes or {})}).replace('"BIG"', BIG_DIGITS)
    if raw == "deep":
        text = "[" * DEEP + "]" * DEEP
    ds.replace_schema_metadata({"clusvpr_map": text})


def lance_foreign(folder: Path, other: Path) -> None:
    """The first data file replaced by one of another store of the same schema (renamed to this one's name)."""
    mine = sorted((folder / "data").iterdir())[0]
    shutil.copy(sorted((other / "data").iterdir())[0], mine)


def lance_file(folder: Path, role: str) -> Path:
    """A store file by role: data0..2, manifest (the latest version's), manifest_old, hint, txn."""
    data = sorted((folder / "data").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    versions = sorted(p for p in (folder / "_versions").glob("*.manifest"))
    if role.startswith("data"):
        return data[int(role[4:]) % len(data)]
    return {"manifest": versions[0] if versions else folder, "manifest_old": versions[-1],
            "hint": folder / "_versions" / "latest_version_hint.json",
            "txn": sorted((folder / "_transactions").iterdir())[0]}[role]


# ------------------------------------------------------------------------------------------------ ONNX
def onnx_edit(path: Path, edit: str, value: Any = None) -> None:
    """A runtime file whose vpr_runtime metadata has a field set (`meta`, value: {field: v} or raw text), an
    initializer with external data in the cwd's secret file, a node of a custom domain, another declared output
    width, or a giant constant."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path))
    graph = proto.graph
    if edit == "meta":
        prop = next(p for p in proto.metadata_props if p.key == "vpr_runtime")
        if isinstance(value, dict):
            prop.value = json.dumps({**json.loads(prop.value), **value}).replace('"BIG"', BIG_DIGITS)
        else:
            prop.value = "[" * DEEP + "]" * DEEP if value == "deep" else str(value)
    elif edit == "external":
        tensor = graph.initializer[0]
        tensor.ClearField("raw_data")
        del tensor.float_data[:]
        tensor.data_location = TensorProto.EXTERNAL
        for key, val in (("location", SECRET), ("offset", "0"), ("length", str(4 * int(np.prod(tensor.dims))))):
            tensor.external_data.add(key=key, value=val)
    elif edit == "custom_domain":
        graph.node[0].domain = "com.example.custom"
    elif edit == "output_shape":
        graph.output[0].type.tensor_type.shape.dim[-1].dim_value = 999
    elif edit == "giant_constant":
        shape = helper.make_tensor("giant_shape", TensorProto.INT64, [2], [15000, 15000])
        graph.initializer.append(shape)
        graph.node.append(helper.make_node("ConstantOfShape", ["giant_shape"], ["giant"]))
        graph.output.append(helper.make_tensor_value_info("giant", TensorProto.FLOAT, [15000, 15000]))
    onnx.save(proto, str(path))


# ------------------------------------------------------------------------------------------------ images
def image_edit(path: Path, edit: str) -> None:
    """An image file turned into a decompression bomb, a header declaring a huge 16-bit image, a JPEG header of
    65000^2, a text file, or re-encoded to the same pixels as 16-bit or RGBA (which must decode the same)."""
    from PIL import Image

    if edit in ("same_16bit", "same_rgba"):
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        if edit == "same_rgba":
            Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(path, format="PNG")
        else:
            path.write_bytes(png_16bit(rgb.astype(np.uint16) * 257))
        return
    path.write_bytes(crafted_image(edit))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_16bit(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of (H, W, 3) uint16 pixels (Pillow writes no 16-bit RGB)."""
    import zlib

    h, w, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) + \
        _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")


@functools.lru_cache(maxsize=None)
def crafted_image(edit: str) -> bytes:
    """Bytes of a crafted image: 'bomb' (a 30000^2 PNG of zeros, a few KB), 'header_16bit' (a 13000^2 16-bit RGB
    PNG header over a tiny body), 'jpeg_header' (SOF of 65000^2), 'text'."""
    import zlib

    sig = b"\x89PNG\r\n\x1a\n"
    if edit == "bomb":
        side = 30000
        row = b"\x00" + b"\x00" * side
        body = zlib.compressobj(9)
        data = b"".join(body.compress(row) for _ in range(side)) + body.flush()
        return sig + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)) + \
            _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    if edit == "header_16bit":
        return sig + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 13000, 13000, 16, 2, 0, 0, 0)) + \
            _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b"")
    if edit == "jpeg_header":
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65000, 65000, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
        return b"\xff\xd8" + sof + b"\xff\xd9"
    return b"this is not an image\n" * 10


# ------------------------------------------------------------------------------------------------ places CSV
def csv_edit(path: Path, edit: str) -> None:
    """A places CSV (header image,place; one row per image) edited: a byte-order mark or CRLF line ends (the same
    rows), another delimiter, a column renamed, an image's row repeated (with another place, or the same), a row
    removed, the first place emptied or set to NaN, inf, 1.5, 2^70, a 5000-digit number or a word, a 2 MB line, a NUL
    byte, an unclosed quote, or the header alone."""
    header, *rows = path.read_text().splitlines()
    first = rows[0].split(",")
    cell = {"empty_place": "", "nan": "nan", "inf": "inf", "float": "1.5", "huge": str(2**70), "big_digits": BIG_DIGITS,
            "word": "kitchen", "nul": first[1] + "\x00"}
    if edit in cell:
        rows[0] = f"{first[0]},{cell[edit]}"
    elif edit == "duplicate_row":
        rows.append(f"{first[0]},{int(first[1]) + 7}")
    elif edit == "duplicate_same":
        rows.append(rows[0])
    elif edit == "missing_row":
        rows = rows[1:]
    elif edit == "huge_line":
        rows[0] = f"{first[0]},{first[1]},{'x' * (2 << 20)}"
    elif edit == "quote":
        rows[0] = '"' + rows[0]
    elif edit == "header_only":
        rows = []
    elif edit in ("semicolon", "tabs"):
        sep = ";" if edit == "semicolon" else "\t"
        header, rows = header.replace(",", sep), [r.replace(",", sep) for r in rows]
    elif edit in ("no_place_column", "no_image_column"):
        header = header.replace("place" if edit == "no_place_column" else "image", "site")
    text = "\n".join([header, *rows]) + "\n"
    if edit == "crlf":
        text = text.replace("\n", "\r\n")
    path.write_bytes(("\ufeff" if edit == "bom" else "").encode() + text.encode())


MUTATIONS: Dict[str, Callable[..., None]] = {
    "flip": flip, "truncate": truncate, "delete": delete, "garbage": garbage, "append": append,
    "symlink_secret": symlink_secret, "symlink_copy": symlink_copy, "to_dir": to_dir, "json_set": json_set,
    "json_drop": json_drop, "json_deep": json_deep, "json_bignum": json_bignum, "json_huge_string": json_huge_string,
    "st_edit": st_edit, "vectors_nan": vectors_nan, "faiss_swap": faiss_swap, "h5_edit": h5_edit,
    "onnx_edit": onnx_edit, "image_edit": image_edit, "csv_edit": csv_edit,
}
