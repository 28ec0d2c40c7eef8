"""What a damaged map store is missing, in words: the Lance file that cannot be read (a data fragment or a version's
manifest: missing, truncated, garbage or from another dataset), the last version that can still be used, and which
manifests to delete to resume from it. Also the Lance folder a killed create left with no committed version, and its
removal file by file (safe beside a creator renaming a new store into the same folder)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Tuple

from .._util.jsonio import loads_bounded
from . import store_checksums

_MANIFEST = ".manifest"
# what a Lance dataset with no committed version can hold
_LANCE_DIRS = ("_versions", "_transactions", "data", store_checksums.CHECKSUMS)
_MAX_VERSIONS = 256  # versions tried (newest first) when looking for the last usable one
_FIX = "or delete the store folder and extract again (it is cheap to rebuild)"


class StoreDamagedError(ValueError):
    """A map store whose Lance files cannot be read: a data fragment or a manifest is missing, damaged or foreign."""


def lance_error(err: BaseException) -> bool:
    """Whether `err` is how Lance reports a file it cannot read: an OSError or ValueError, or a panic of its Rust
    code (pyo3's PanicException, a BaseException: an empty data file or a damaged manifest panics while decoding)."""
    return isinstance(err, (OSError, ValueError)) or type(err).__name__ == "PanicException"


def manifests(folder: Path) -> List[Tuple[int, Path]]:
    """(version, manifest file) of every committed version, newest first. Lance names manifests either by version
    (`3.manifest`) or by 2^64 - 1 - version (so that the newest sorts first)."""
    found = []
    versions = folder / "_versions"
    for path in versions.iterdir() if versions.is_dir() else ():
        stem = path.name[: -len(_MANIFEST)]
        if path.name.endswith(_MANIFEST) and stem.isdigit() and path.is_file():
            number = int(stem)
            found.append((number if number < 1 << 63 else (1 << 64) - 1 - number, path))
    return sorted(found, reverse=True)


def committed(folder: Path) -> bool:
    """Whether `folder` holds a Lance dataset with at least one committed version (a manifest file, not only a
    temporary one a killed commit left)."""
    return bool(manifests(folder))


def uncommitted_lance_folder(folder: Path) -> bool:
    """Whether `folder` holds what a create killed before its first commit leaves: Lance's folders and files in
    them, and no manifest."""
    if not folder.is_dir() or committed(folder) or not (folder / "_versions").is_dir():
        return False
    return all(p.name in _LANCE_DIRS and p.is_dir() and not p.is_symlink() for p in folder.iterdir())


def clear_uncommitted(folder: Path) -> None:
    """Remove an uncommitted Lance folder's files one by one (each by the name listed first), then its emptied
    folders (rmdir, which refuses a folder with anything in it). A creator that renames a new store onto `folder`
    can do so only once it is empty, and its files have other (random) names: nothing of it is removed."""
    if not uncommitted_lance_folder(folder):
        return
    for sub in _LANCE_DIRS:
        for path in list((folder / sub).iterdir()) if (folder / sub).is_dir() else ():
            if path.is_file() and not path.is_symlink():
                try:
                    os.unlink(path)
                except OSError:
                    pass
        try:
            os.rmdir(folder / sub)
        except OSError:
            pass


def uncommitted_error(folder: Path) -> StoreDamagedError:
    names = sorted(p.name for p in (folder / "_versions").iterdir())[:3]
    return StoreDamagedError(f"map store {folder} holds no committed version (_versions holds only {names}: a create "
                             "was killed while writing its first manifest); nothing was committed, so nothing is "
                             "lost: run the extraction again (it clears this folder), " + _FIX)


def _reason(err: BaseException) -> str:
    """Lance's message without its source locations."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    text = re.sub(r",\s*/\S+\.rs:\d+:\d+", "", text)
    return text.replace("External error: ", "").replace("LanceError(IO): ", "").strip()[:200]


def _data_files(ds) -> List[str]:
    return [df.path for fragment in ds.get_fragments() for df in fragment.data_files()]


def _unreadable_fragment(ds) -> Optional[str]:
    """The first data file of `ds` whose rows cannot be read (read one fragment at a time)."""
    for fragment in ds.get_fragments():
        try:
            fragment.to_table(columns=["row"])
        except BaseException as err:  # noqa: B036  (Lance's panics are BaseExceptions)
            if not lance_error(err):
                raise
            return fragment.data_files()[0].path
    return None


def diagnose(folder: Path, err: BaseException, bad: Optional[str] = None, why: Optional[str] = None
             ) -> StoreDamagedError:
    """StoreDamagedError for a Lance error `err` met reading the store at `folder` (or for the data file `bad`,
    which `why` says is wrong): which file, why, and the fix (the manifests to delete to resume from the last version
    that can be read and does not use that file)."""
    import lance

    versions = manifests(folder)
    if not versions:
        return uncommitted_error(folder)
    named = re.search(r"data/([\w.-]+\.lance)", str(err))
    bad = bad or (named.group(1) if named else None)
    latest_ok = True
    try:
        latest = lance.dataset(str(folder))
        latest.schema  # noqa: B018  (decoded lazily: a damaged manifest panics here, before a fragment is blamed)
        bad = bad or _unreadable_fragment(latest)
    except BaseException as failure:  # noqa: B036  (Lance's panics are BaseExceptions)
        if not lance_error(failure):
            raise
        latest_ok = False
    if bad is not None:
        bad = Path(bad).name
        state = why or ("is missing" if not (folder / "data" / bad).exists() else "cannot be read")
        what = f"its data file data/{bad} {state}"
    elif not latest_ok:
        what = f"the manifest of its last version ({versions[0][0]}, _versions/{versions[0][1].name}) cannot be read"
    else:
        what = "a file cannot be read"
    message = f"map store {folder} is damaged: {what} ({_reason(err)}); "
    return StoreDamagedError(message + _resume_from(folder, versions, bad) + _FIX)


def _resume_from(folder: Path, versions: List[Tuple[int, Path]], bad: Optional[str]) -> str:
    """How to go back to the newest version that opens and does not use the data file `bad` ('' when the last
    version is that one or none is)."""
    import lance

    for version, _ in versions[:_MAX_VERSIONS]:
        try:
            ds = lance.dataset(str(folder), version=version)
            ds.schema  # noqa: B018  (decoded lazily: this version's manifest is damaged if it panics)
            if bad is not None and bad in {Path(p).name for p in _data_files(ds)}:
                continue
        except BaseException as err:  # noqa: B036  (Lance's panics are BaseExceptions)
            if not lance_error(err):
                raise
            continue
        if version == versions[0][0]:
            return ""
        newer = [f"_versions/{p.name}" for v, p in versions if v > version]
        shown = ", ".join(newer[:3]) + (f" and {len(newer) - 3} more" if len(newer) > 3 else "")
        return (f"version {version} is the last that can be used: delete {shown} (the manifests of the versions "
                f"after it) and run the extraction again to resume from version {version} (the chunks committed "
                "after it are extracted again), ")
    return ""


def check_fragments(folder: Path, ds, store_id: str, verify: bool = True) -> None:
    """Every data file of `ds` was written for this store: its own copy of the store metadata (Lance keeps the
    schema in each file) names the same store id. A file copied in from another store of the same schema would
    otherwise be served as this store's rows. `verify`: each file also matches the sha256 recorded when it was
    committed (store_checksums), which reads every data file once per process."""
    from lance.file import LanceFileReader

    for name in _data_files(ds):
        path = folder / "data" / Path(name).name
        try:
            raw = (LanceFileReader(str(path)).metadata().schema.metadata or {}).get(b"clusvpr_map")
            other = loads_bounded(raw, f"map metadata of {path}").get("store_id") if raw is not None else None
        except BaseException as err:  # noqa: B036  (Lance's panics are BaseExceptions)
            if not (lance_error(err) or isinstance(err, AttributeError)):
                raise
            raise diagnose(folder, err, bad=path.name) from None
        if other != store_id:
            raise diagnose(folder, ValueError(f"store id {str(other)[:40]}, this store's is {store_id}"),
                           bad=path.name, why="belongs to another map store")
        wrong = store_checksums.problem(folder, path.name) if verify else None
        if wrong:
            raise diagnose(folder, ValueError(wrong), bad=path.name, why=wrong)
