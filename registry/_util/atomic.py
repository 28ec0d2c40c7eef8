"""Atomic file writes: write beside the target, fsync, then os.replace, so a crash never leaves half a file; the file
gets the permissions any file the user creates gets (0666 minus the umask), not tempfile's private 0600.

A folder of files is written the same way by `staged_folder`, the one folder writer (the saved PlaceIndex and the
Hub layout): built in a staging folder beside its target, fsynced, then renamed into place, either replacing the
target as a whole or, for a layout whose folder may hold the user's other files, file by file with one file last.

The temporary files (`atomic_path`), staging folders (`staging_dir`) and the earlier folder a replacement moves aside
are named `.<target name>.<8 random characters>.tmp` beside their target; `is_temporary` and `leftovers` recognise
them, so a run that starts after a kill can remove what the kill left without knowing how they are named.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]
SUFFIX = ".tmp"
# tempfile puts 8 of these characters between the prefix and the suffix (tempfile._RandomNameSequence)
_RANDOM = re.compile(r"[a-z0-9_]{8}")


def _prefix(target: Path) -> str:
    return f".{target.name}."

# errors of a write that ran out of room or was refused: reported naming the file and what was kept
_WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file would exceed the file-size limit (ulimit -f) or what the file system allows",
    errno.EIO: "an input/output error on the disk",
    errno.EROFS: "the file system is read-only",
}


def write_failure(err: BaseException) -> "str | None":
    """Why a write failed, in words, when `err` is an OSError of a write that ran out of room or was refused."""
    return _WRITE_FAILURES.get(getattr(err, "errno", None)) if isinstance(err, OSError) else None


def errno_of(err: BaseException) -> "int | None":
    """The errno of a failed write: the OSError's own, else one a library's message carries (`os error 28` from
    Rust, `[Errno 28]`, or the system's words for one of the write failures, e.g. faiss's `(No space left on
    device)`); None when there is none."""
    code = getattr(err, "errno", None)
    if isinstance(code, int):
        return code
    text = str(err)
    found = re.search(r"os error (\d+)|\[Errno (\d+)\]", text)
    if found:
        return int(found.group(1) or found.group(2))
    return next((c for c in _WRITE_FAILURES if f"({os.strerror(c)})" in text), None)


def umask() -> int:
    """The process's umask, read without changing it where /proc says it (os.umask would, for a moment, for every
    thread); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open() gives a new file: 0o666 minus the umask."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """The mode mkdir() gives a new folder: 0o777 minus the umask."""
    return 0o777 & ~umask()


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is fsynced and replaces the target, on error it
    is removed and the target left as it was. A write that fails for want of room (disk full, quota, file-size
    limit, read-only or failing disk) is re-raised as an OSError of the same errno naming the target and what
    was kept."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=SUFFIX, dir=target.parent)
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, file_mode())  # mkstemp creates it 0600 whatever the umask
    finally:
        os.close(fd)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno not in _WRITE_FAILURES or getattr(err, "atomic_target", None) is not None:
            raise
        kept = (f"the earlier {target.name} is unchanged" if target.exists() else f"no {target.name} was written")
        clear = OSError(err.errno, f"could not write {target}: {_WRITE_FAILURES[err.errno]} ({err.strerror}); "
                                   f"{kept} and no partial file is left")
        clear.atomic_target = target  # an enclosing atomic_path (a staged folder) keeps this message
        raise clear from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)


def fsync_folder(folder: Union[str, os.PathLike]) -> None:
    """Make a rename in `folder` durable (where the system lets a folder be opened and fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staging_dir(target: PathLike) -> Path:
    """A new private folder beside `target` to build it in before it is renamed into place (the caller renames it,
    or removes it on failure); named like `atomic_path`'s temporary files, so `leftovers` finds it after a kill."""
    target = Path(target)
    return Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=SUFFIX, dir=target.parent))


@contextlib.contextmanager
def staged_folder(target: PathLike, layout: Optional[Sequence[str]] = None, last: Optional[str] = None,
                  exclusive: bool = False) -> Iterator[Path]:
    """Yield a new staging folder beside `target` to write the folder's files in. When the block ends without an
    error, the folders and files in it get the modes the umask gives (not mkdtemp's private 0700), every file and
    folder is fsynced, and the folder is installed: renamed to `target` when there is none. Else `exclusive`: the
    rename is tried only onto an empty `target` (atomic: of two writers exactly one wins) and FileExistsError
    raised when it holds anything; `layout` None: `target` is replaced as a whole (moved aside, the new folder
    renamed in, the old one removed; moved back if that rename fails); `layout` (the names the folder's files may
    have): each staged file replaces its namesake in `target`, `last` last, a `layout` name the stage lacks is
    removed from `target`, and any other file there is kept. On an error the staging folder is removed and `target`
    left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(target)
    try:
        yield stage
        _settle(stage)
        if exclusive:
            try:
                os.rename(stage, target)  # refused when target holds anything
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FileExistsError(errno.EEXIST, f"{target} exists and is not empty") from None
                raise
        elif not target.exists():
            os.rename(stage, target)
        elif layout is None:
            _replace_whole(stage, target)
        else:
            _replace_files(stage, target, layout, last)
        fsync_folder(target)
        fsync_folder(target.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _settle(folder: Path) -> None:
    """The umask's modes for `folder` and everything in it; every file and folder fsynced, innermost first."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, file_mode())
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        for name in dirs:
            os.chmod(os.path.join(root, name), folder_mode())
            fsync_folder(os.path.join(root, name))
    os.chmod(folder, folder_mode())
    fsync_folder(folder)


def _replace_whole(stage: Path, target: Path) -> None:
    """`target` moved aside (into a folder `leftovers` recognises), `stage` renamed in, the old one removed; the old
    one moved back when the rename fails."""
    aside = staging_dir(target)
    os.rename(target, aside / target.name)
    try:
        os.rename(stage, target)
    except BaseException:
        os.rename(aside / target.name, target)
        raise
    finally:
        if target.exists():
            shutil.rmtree(aside, ignore_errors=True)


def _replace_files(stage: Path, target: Path, layout: Sequence[str], last: Optional[str]) -> None:
    written = {p.name for p in stage.iterdir()}
    for name in layout:
        if name == last:
            continue
        if name in written:
            os.replace(stage / name, target / name)
        elif (target / name).is_file():  # a file of an earlier save that this one does not have
            (target / name).unlink()
    if last is not None and last in written:
        os.replace(stage / last, target / last)


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
