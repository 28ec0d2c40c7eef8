"""Bundled releases: release folders that store the tensors they share with other bundled releases once.

A bundled release folder holds the layout of `save_pretrained` (config.json, README.md, centroids.h5, pca.h5) with
model.safetensors replaced by `bundle.json` and `own.safetensors` (the tensors no other release shares). Each
tensor that several releases hold bit for bit is stored once, in a content-addressed file `<sha256>.safetensors` of
a shared store folder (`_shared/` beside the release folders). `bundle.json` records:

    {"format": "clusvpr-zoo bundle", "version": 1,
     "file": "model.safetensors", "size": <bytes>, "sha256": <hex>,       # the complete file it stands for
     "header": "<the complete file's safetensors header, byte for byte>",
     "pieces": [{"file": "own.safetensors" | "../_shared/<sha256>.safetensors",   # relative to the folder
                 "sha256": <hex>, "size": <bytes>, "tensors": [<names it supplies>]}, ...]}

Reading (`bundled_weights`) rebuilds the complete model.safetensors in memory, byte for byte: every piece is
checked against its sha256 and size, its tensors against the header (dtype, shape, byte count), and the rebuilt
file against the sha256 that both bundle.json and config.json record. Loading then goes on exactly as for an
ordinary folder, so the sharing is only how the bytes are stored: saving or pushing a model loaded from a bundle
writes the ordinary layout. Bundles are read from local folders only (the releases shipped in a package); a Hub
repository always holds the ordinary layout.
"""
from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Mapping, Tuple

from .._util.jsonio import SAFETENSORS_MAX_HEADER, check_safetensors_entries, loads_bounded, quote, read_json
from ._layout import WEIGHTS
from .errors import CorruptedFileError, FileNotInRepoError, WrongModelError

MANIFEST = "bundle.json"
OWN = "own.safetensors"
SHARED_STORE = "_shared"
FORMAT = "clusvpr-zoo bundle"
VERSION = 1
SHARED_NAME = re.compile(r"^([0-9a-f]{64})\.safetensors$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REBUILD = ("rebuild the bundle from the ordinary release folders with `vpr release bundle`, or reinstall the package "
           "(or restore the folders from version control) so the bundled files are the ones it shipped")


def is_bundled(folder: Path) -> bool:
    """Whether `folder` stores its weights as a bundle (bundle.json and no model.safetensors of its own)."""
    return (folder / MANIFEST).is_file() and not (folder / WEIGHTS).exists()


def read_manifest(folder: Path) -> Dict[str, Any]:
    """bundle.json of `folder`, checked field by field: WrongModelError naming the field and the fix."""
    what = f"{folder / MANIFEST}"
    manifest = read_json(folder / MANIFEST, what, error=WrongModelError, max_bytes=16 << 20, max_depth=4,
                         fix=f"the file is damaged or was not written by `vpr release bundle`; {REBUILD}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WrongModelError(f"{what} is not a bundle manifest (format {FORMAT!r} expected); {REBUILD}")
    if manifest.get("version") != VERSION:
        raise WrongModelError(f"{what} is bundle format version {quote(manifest.get('version'))}; this version of the "
                              f"zoo reads version {VERSION}: upgrade clusvpr-zoo, or {REBUILD}")
    problems = [f"{k} ({quote(manifest.get(k))})" for k, ok in (
        ("file", manifest.get("file") == WEIGHTS), ("sha256", bool(_SHA256.match(str(manifest.get("sha256", ""))))),
        ("size", _count(manifest.get("size"))), ("header", isinstance(manifest.get("header"), str)),
        ("pieces", isinstance(manifest.get("pieces"), list) and bool(manifest.get("pieces")))) if not ok]
    for i, piece in enumerate(manifest.get("pieces") or []):
        good = (isinstance(piece, dict) and isinstance(piece.get("file"), str) and _count(piece.get("size"))
                and bool(_SHA256.match(str(piece.get("sha256", "")))) and isinstance(piece.get("tensors"), list)
                and all(isinstance(t, str) for t in piece["tensors"]))
        if not good:
            problems.append(f"pieces[{i}] ({quote(piece)})")
    if problems:
        raise WrongModelError(f"{what} has invalid fields: {', '.join(problems)}; {REBUILD}")
    return manifest


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def piece_path(folder: Path, piece: Mapping[str, Any]) -> Path:
    """Where a piece of `folder`'s bundle lives: `own.safetensors` inside the folder, or a shared file, named by its
    own sha256, in a store given relative to the folder. WrongModelError for any other name."""
    name = PurePosixPath(piece["file"])
    shared = SHARED_NAME.match(name.name)
    inside = len(name.parts) == 1 and name.name == OWN
    if name.is_absolute() or not (inside or (shared and shared.group(1) == piece["sha256"])):
        raise WrongModelError(
            f"{folder / MANIFEST} names the piece {quote(piece['file'], 300)}: a piece is {OWN} inside the release "
            f"folder or a shared file <its sha256>.safetensors given relative to the folder; {REBUILD}")
    return folder.joinpath(*name.parts)


def check_piece(folder: Path, piece: Mapping[str, Any]) -> Tuple[Path, bytes]:
    """The piece's path and bytes (read once) when its size and sha256 are the ones bundle.json records:
    FileNotInRepoError when it is missing, CorruptedFileError when its bytes differ, each naming the file and the
    fix."""
    path = piece_path(folder, piece)
    role = "its own tensors" if path.parent == folder else "tensors shared with other bundled releases"
    if not path.is_file():
        raise FileNotInRepoError(
            f"{folder / MANIFEST} names {piece['file']} ({path.resolve()}, holding {role}), which does not exist; "
            f"{REBUILD}. A bundled release folder reads the shared store beside it: to copy one elsewhere, write its "
            "ordinary layout with `vpr release unbundle`")
    size = path.stat().st_size
    raw = path.read_bytes() if size == piece["size"] else b""
    digest = hashlib.sha256(raw).hexdigest() if size == piece["size"] else None
    if digest != piece["sha256"]:
        found = f"sha256 {digest}" if digest is not None else f"{size:,} bytes"
        want = f"sha256 {piece['sha256']}" if digest is not None else f"{piece['size']:,}"
        raise CorruptedFileError(
            f"{path.resolve()} ({role} of the bundled release {folder}) has {found}, but {folder / MANIFEST} records "
            f"{want}: a corrupted or mismatched file, never used; {REBUILD}")
    return path, raw


def _tensor_entries(header: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {k: v for k, v in header.items() if k != "__metadata__"}


def bundled_weights(folder: Path, expected_sha256: str) -> bytes:
    """The complete model.safetensors of the bundled release in `folder`, rebuilt byte for byte from its pieces and
    checked: each piece against bundle.json, each tensor against the header, the whole against `expected_sha256`
    (what config.json records). Named errors (file, problem, fix) for anything that does not match."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    what = f"the model.safetensors that {folder / MANIFEST} describes"
    head = manifest["header"].encode("utf-8")
    header = loads_bounded(head, f"the header in {folder / MANIFEST}", max_depth=4, max_bytes=16 << 20,
                           fix=REBUILD, error=WrongModelError)
    body = manifest["size"] - 8 - len(head)
    if not isinstance(header, dict) or body < 0:
        raise WrongModelError(f"the header in {folder / MANIFEST} does not describe a {manifest['size']:,}-byte "
                              f"safetensors file; {REBUILD}")
    check_safetensors_entries(header, body, f"the model.safetensors {folder / MANIFEST} describes", REBUILD,
                              WrongModelError)
    entries = _tensor_entries(header)
    data = bytearray(body)
    supplied: Dict[str, str] = {}
    for piece in manifest["pieces"]:
        path, raw = check_piece(folder, piece)
        own, start = _piece_header(raw, path)
        for name in piece["tensors"]:
            _place(data, name, (entries, own, supplied), (raw, start, path), folder / MANIFEST)
    missing = sorted(set(entries) - set(supplied))
    if missing:
        raise WrongModelError(f"{folder / MANIFEST}: no piece supplies the tensors {missing[:6]}; {REBUILD}")
    full = struct.pack("<Q", len(head)) + head + bytes(data)
    digest = hashlib.sha256(full).hexdigest()
    if digest != manifest["sha256"] or digest != expected_sha256:
        raise CorruptedFileError(
            f"{what} rebuilds to sha256 {digest}, but bundle.json records {manifest['sha256']} and config.json "
            f"{expected_sha256}: the pieces or config.json do not belong together; {REBUILD}")
    return full


def _piece_header(raw: bytes, path: Path) -> Tuple[Dict[str, Dict[str, Any]], int]:
    """A piece's tensor entries (checked against its bytes) and where its data section starts."""
    fix = f"the file is damaged: {REBUILD}"
    length = struct.unpack("<Q", raw[:8])[0] if len(raw) >= 8 else -1
    if not 0 <= length <= min(SAFETENSORS_MAX_HEADER, len(raw) - 8):
        raise CorruptedFileError(f"{path} is not a safetensors file (a header of {length} bytes in {len(raw):,}); "
                                 f"{fix}")
    header = loads_bounded(raw[8:8 + length], f"the safetensors header of {path}", max_bytes=SAFETENSORS_MAX_HEADER,
                           max_depth=4, fix=fix, error=CorruptedFileError)
    if not isinstance(header, dict):
        raise CorruptedFileError(f"the safetensors header of {path} is not a JSON object; {fix}")
    check_safetensors_entries(header, len(raw) - 8 - length, str(path), fix, CorruptedFileError)
    return _tensor_entries(header), 8 + length


def _place(data: bytearray, name: str, tables: Tuple[Mapping[str, Any], Mapping[str, Any], Dict[str, str]],
           piece: Tuple[bytes, int, Path], manifest: Path) -> None:
    """Copy tensor `name`'s bytes into `data` from a piece (its bytes, where its data section starts, its path);
    `tables` are the release's header entries, the piece's, and which piece supplied each tensor so far."""
    entries, own, supplied = tables
    raw, start, path = piece
    if name not in entries or name not in own or name in supplied:
        why = ("is not a tensor of the release" if name not in entries else f"is not in {path}" if name not in own
               else f"is supplied by {supplied[name]} too")
        raise WrongModelError(f"{manifest}: tensor {quote(name)} {why}; {REBUILD}")
    want, got = entries[name], own[name]
    if (want["dtype"], want["shape"]) != (got["dtype"], got["shape"]):
        raise CorruptedFileError(f"{path} holds {name} as {got['dtype']} {got['shape']}, but the release needs "
                                 f"{want['dtype']} {want['shape']}; {REBUILD}")
    (begin, end), (b, e) = want["data_offsets"], got["data_offsets"]
    data[begin:end] = raw[start + b:start + e]
    supplied[name] = path.name

