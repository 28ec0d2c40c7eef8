"""Atomic file writes: write beside the target, fsync, then os.replace, so a crash never leaves half a file.

The temporary files (`atomic_path`) and staging folders (`staging_dir`) are named `.<target name>.<8 random
characters>.tmp` beside their target; `is_temporary` and `leftovers` recognise them, so a run that starts after a
kill can remove what the kill left without knowing how they are named.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

PathLike = Union[str, os.PathLike]
SUFFIX = ".tmp"
# tempfile puts 8 of these characters between the prefix and the suffix (tempfile._RandomNameSequence)
_RANDOM = re.compile(r"[a-z0-9_]{8}")


def _prefix(target: Path) -> str:
    return f".{target.name}."


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces the target, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def staging_dir(target: PathLike) -> Path:
    """A new private folder beside `target` to build it in before it is renamed into place (the caller renames it,
    or removes it on failure); named like `atomic_path`'s temporary files, so `leftovers` finds it after a kill."""
    target = Path(target)
    return Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=SUFFIX, dir=target.parent))


def is_temporary(path: PathLike, target: Optional[PathLike] = None) -> bool:
    """Whether `path` is named as a temporary file of `atomic_path` or a folder of `staging_dir` are (of `target`,
    when given: beside it and made for it)."""
    path = Path(path)
    name = path.name
    if not (name.startswith(".") and name.endswith(SUFFIX)):
        return False
    stem, dot, random = name[1 : -len(SUFFIX)].rpartition(".")
    if not (dot and stem and _RANDOM.fullmatch(random)):
        return False
    return target is None or (stem == Path(target).name and path.parent == Path(target).parent)


def leftovers(folder: PathLike, target: Optional[PathLike] = None) -> List[Path]:
    """The temporary files and staging folders in `folder` (only those of `target` when given), sorted; what a
    killed writer leaves behind. Empty when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f".*{SUFFIX}") if is_temporary(p, target))
