"""Writing bundled releases (the format `registry.hub._bundle` reads): the tensors that ordinary release folders
hold bit for bit go once into the shared store, each folder keeps its own tensors and a manifest, and every bundle
is read back and checked to rebuild its original model.safetensors byte for byte before anything is removed."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

from .._util.atomic import atomic_path, staged_folder
from .._util.files import sha256_file
from .._util.jsonio import SAFETENSORS_DTYPES, check_safetensors_header
from ._bundle import FORMAT, MANIFEST, OWN, VERSION, bundled_weights, is_bundled
from ._layout import WEIGHTS
from ._source import Snapshot
from .errors import HubError


class BundleError(HubError, ValueError):
    """Release folders that cannot be bundled as asked (the message names the folder or tensor and the fix)."""


class Tensor(NamedTuple):
    """One tensor of a safetensors file: its dtype name, shape and raw bytes."""

    dtype: str
    shape: Tuple[int, ...]
    data: bytes


class Release(NamedTuple):
    """An ordinary release folder read for bundling: its complete model.safetensors and the tensors in it."""

    folder: Path
    sha256: str
    weights: bytes
    header: str
    tensors: Dict[str, Tensor]


def read_release(folder: Path) -> Release:
    """The verified complete weights of a release folder (ordinary, or bundled already) and its tensors."""
    folder = Path(folder)
    snap = Snapshot(folder)
    entry = (snap.zoo_config()["files"] or {}).get(WEIGHTS)
    if entry is None:
        raise BundleError(f"{folder}: config.json lists no {WEIGHTS}, so there is nothing to bundle")
    if is_bundled(folder):
        weights = bundled_weights(folder, entry["sha256"])
    else:
        path = snap.path(WEIGHTS)  # sha256-checked against config.json
        check_safetensors_header(path, error=BundleError)
        weights = path.read_bytes()
    (length,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8:8 + length])
    start = 8 + length
    tensors = {name: Tensor(e["dtype"], tuple(e["shape"]), weights[start + e["data_offsets"][0]:
                                                                   start + e["data_offsets"][1]])
               for name, e in header.items() if name != "__metadata__"}
    return Release(folder, entry["sha256"], weights, weights[8:8 + length].decode("utf-8"), tensors)


def shared_groups(releases: Sequence[Release], share: Sequence[str] = ()) -> Dict[FrozenSet[int], List[str]]:
    """Which releases (indices) share which tensors: a tensor is shared by the releases that hold it with the same
    name, dtype, shape and bytes (compared byte for byte), two or more of them. With `share` (shell patterns of
    tensor names) only the matching tensors are shared, and each must be bit-identical in every release:
    BundleError naming the tensor and the releases where it differs otherwise."""
    names = sorted({n for r in releases for n in r.tensors})
    if share:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in share)]
        unmatched = [p for p in share if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            raise BundleError(f"--share {' '.join(unmatched)} matches no tensor of the releases; tensor names look "
                              f"like {names[:3] or sorted(releases[0].tensors)[:3]}")
    groups: Dict[FrozenSet[int], List[str]] = {}
    for name in names:
        classes: Dict[Tensor, List[int]] = {}
        for i, release in enumerate(releases):
            if name in release.tensors:
                classes.setdefault(release.tensors[name], []).append(i)  # NamedTuple equality: dtype, shape, bytes
        if share and (len(classes) != 1 or len(next(iter(classes.values()))) != len(releases)):
            raise BundleError(_not_identical(name, releases, classes))
        for members in classes.values():
            if len(members) > 1:
                groups.setdefault(frozenset(members), []).append(name)
    if not groups:
        raise BundleError(f"no tensor is bit-identical in two of {', '.join(str(r.folder) for r in releases)}: "
                          "there is nothing to store once; bundle releases that share frozen layers")
    return groups


def _not_identical(name: str, releases: Sequence[Release], classes: Dict[Tensor, List[int]]) -> str:
    lacking = [str(r.folder) for r in releases if name not in r.tensors]
    if lacking:
        return f"tensor {name} (asked to be shared by --share) is not in {', '.join(lacking)}: share only tensors " \
               "every release holds"
    parts = "; ".join(f"{', '.join(releases[i].folder.name for i in members)}: {t.dtype} {list(t.shape)} sha256 "
                      f"{hashlib.sha256(t.data).hexdigest()[:12]}" for t, members in classes.items())
    return (f"tensor {name} (asked to be shared by --share) is not bit-identical across the releases ({parts}); "
            "share only the layers they froze, or release them from one frozen backbone")


def piece_bytes(tensors: Dict[str, Tensor]) -> bytes:
    """A safetensors file holding `tensors` (widest dtype first, then by name; no metadata): the same tensors
    always give the same bytes, so a shared file's name (its sha256) is the same for every bundle that holds it."""
    order = sorted(tensors, key=lambda n: (-SAFETENSORS_DTYPES[tensors[n].dtype], n))
    header, offset = {}, 0
    for name in order:
        t = tensors[name]
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors pads its header with spaces to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(tensors[n].data for n in order)


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_shared(store: Path, tensors: Dict[str, Tensor]) -> Path:
    """The shared file `<sha256>.safetensors` of `tensors` in `store` (written unless an intact copy is there)."""
    data = piece_bytes(tensors)
    path = Path(store) / f"{hashlib.sha256(data).hexdigest()}.safetensors"
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        _write(path, data)
    return path


def _piece(path: Path, target: Path, names: Sequence[str]) -> Dict[str, Any]:
    return {"file": Path(os.path.relpath(path, target)).as_posix(), "sha256": sha256_file(path),
            "size": path.stat().st_size, "tensors": sorted(names)}


def manifest(release: Release, pieces: List[Dict[str, Any]]) -> Dict[str, Any]:
    """bundle.json of `release` made of `pieces`."""
    return {"format": FORMAT, "version": VERSION, "file": WEIGHTS, "size": len(release.weights),
            "sha256": release.sha256, "header": release.header, "pieces": pieces}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def _targets(folders: Sequence[Path], out_dir: Optional[Path]) -> List[Path]:
    """Where each bundle goes (the folder itself, or `out_dir/<its name>`); BundleError for what cannot be done."""
    names = [f.name for f in folders]
    if len(folders) < 2 or len(set(names)) != len(names):
        raise BundleError(f"bundling needs two or more release folders with different names, got {names}")
    if out_dir is None:
        done = [str(f) for f in folders if is_bundled(f)]
        if done:
            raise BundleError(f"{', '.join(done)} are bundled already: bundle them again into --out-dir, or "
                              "rebuild the ordinary folders (vpr release build) and bundle those in place")
        return list(folders)
    targets = [Path(out_dir) / name for name in names]
    taken = [str(t) for t in targets if t.exists()]
    if taken:
        raise BundleError(f"{', '.join(taken)} exist already: remove them or choose another --out-dir")
    return targets


def bundle_releases(folders: Sequence[os.PathLike], shared_out: os.PathLike, out_dir: Optional[os.PathLike] = None,
                    share: Sequence[str] = ()) -> Dict[str, Any]:
    """Bundle ordinary release folders: every tensor that two or more of them hold bit for bit (only those matching
    `share`, shell patterns, when given, and then each must be identical in all) is written once into the store
    `shared_out`; each release keeps the rest in own.safetensors beside bundle.json, in place (its model.safetensors
    removed once the bundle has been read back and rebuilds it byte for byte) or in `out_dir/<its name>` (the
    other files copied). config.json, the card and the other files are unchanged. The report: bytes before and
    after, and which tensors each shared file holds."""
    folders = [Path(f) for f in folders]
    targets = _targets(folders, None if out_dir is None else Path(out_dir))
    before = sum(_folder_bytes(f) for f in folders)
    releases = [read_release(f) for f in folders]
    groups = shared_groups(releases, share)
    store = Path(shared_out)
    store.mkdir(parents=True, exist_ok=True)
    shared = {members: write_shared(store, {n: releases[min(members)].tensors[n] for n in names})
              for members, names in groups.items()}
    rows = []
    for i, (release, target) in enumerate(zip(releases, targets)):
        mine = [(path, groups[members]) for members, path in shared.items() if i in members]
        taken = {n for _, names in mine for n in names}
        own = {n: t for n, t in release.tensors.items() if n not in taken}
        _install(release, target, own, mine)
        rows.append({"folder": str(target), "from": str(release.folder), "weights_bytes": len(release.weights),
                     "own_tensors": len(own), "shared_tensors": len(taken), "bytes": _folder_bytes(target)})
    listed = [{"file": str(path), "bytes": path.stat().st_size, "tensors": sorted(groups[members]),
               "releases": [releases[i].folder.name for i in sorted(members)]} for members, path in shared.items()]
    return {"releases": rows, "shared": listed, "bytes_before": before,
            "bytes_after": sum(r["bytes"] for r in rows) + sum(s["bytes"] for s in listed)}


def _install(release: Release, target: Path, own: Dict[str, Tensor], shared: List[Tuple[Path, List[str]]]) -> None:
    """Write `release`'s bundle into `target` and check it rebuilds the original weights before it is used: a new
    folder is staged beside `target` and renamed into place; in place, model.safetensors goes last."""
    if target != release.folder:
        # staged as a sibling of target: the same relative paths reach the shared files
        with staged_folder(target, exclusive=True) as work:
            for path in sorted(release.folder.iterdir()):
                if path.is_file() and path.name not in (WEIGHTS, MANIFEST, OWN):
                    shutil.copy2(path, work / path.name)
            _write_bundle(release, target, work, own, shared, [])
        return
    written: List[Path] = []
    try:
        _write_bundle(release, target, target, own, shared, written)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    (target / WEIGHTS).unlink()


def _write_bundle(release: Release, target: Path, work: Path, own: Dict[str, Tensor],
                  shared: List[Tuple[Path, List[str]]], written: List[Path]) -> None:
    """own.safetensors and the bundle manifest written into `work` (each appended to `written`), then checked to
    rebuild the release's weights byte for byte."""
    pieces = [_piece(path, target, names) for path, names in shared]
    if own:
        _write(work / OWN, piece_bytes(own))
        written.append(work / OWN)
        pieces.insert(0, _piece(work / OWN, work, sorted(own)))
    _write(work / MANIFEST, (json.dumps(manifest(release, pieces), indent=1, sort_keys=True) + "\n").encode())
    written.append(work / MANIFEST)
    bundled_weights(work, release.sha256)  # raises unless it rebuilds the release's file, sha256 for sha256


def unbundle_release(folder: os.PathLike, out: os.PathLike) -> Path:
    """Write the ordinary layout of the bundled release in `folder` to the new folder `out`: its files as they are and
    the complete model.safetensors rebuilt (and checked) from the bundle, byte for byte the one it was made from."""
    folder, out = Path(folder), Path(out)
    if not is_bundled(folder):
        raise BundleError(f"{folder} is not a bundled release (it has no {MANIFEST}, or a {WEIGHTS} of its own)")
    if out.exists():
        raise BundleError(f"{out} exists already: remove it or choose another folder")
    weights = read_release(folder).weights
    with staged_folder(out, exclusive=True) as stage:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name not in (MANIFEST, OWN):
                shutil.copy2(path, stage / path.name)
        (stage / WEIGHTS).write_bytes(weights)
    return out
