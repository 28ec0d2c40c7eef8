"""The sha256 of every data file of a map store, recorded when the file is committed and checked when the store is
opened: Lance keeps no checksum of its data pages, so a byte flipped inside one would otherwise be read back as a
different descriptor. Each data file `data/NAME.lance` has its hex sha256 in `_checksums/NAME.lance.sha256`,
written (atomically) before the commit that makes the file part of a version; Lance never rewrites a data file, so
the checksum holds for the file's life. Checking reads every data file once per process: a file already checked is
known by its inode, size and modification time and not read again."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

from .._util.atomic import atomic_path
from .._util.files import sha256_file

CHECKSUMS = "_checksums"
_checked: Dict[Tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> sha256 read in this process


def _key(path: Path) -> Tuple[str, int, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns


def _sha256(path: Path) -> str:
    key = _key(path)
    if key not in _checked:
        _checked[key] = sha256_file(path)
    return _checked[key]


def record(folder: Path, names: Iterable[str]) -> None:
    """Write the checksum of each data file `names` (file names under folder/data) of the store at `folder`."""
    (folder / CHECKSUMS).mkdir(exist_ok=True)
    for name in names:
        with atomic_path(folder / CHECKSUMS / f"{name}.sha256") as tmp:
            tmp.write_text(_sha256(folder / "data" / name) + "\n")


def problem(folder: Path, name: str) -> Optional[str]:
    """What is wrong with the data file `name` against its recorded checksum, or None (it matches, or the store
    records none for it: a file committed without one is checked by Lance's own means only)."""
    recorded = folder / CHECKSUMS / f"{name}.sha256"
    if not recorded.is_file():
        return None
    try:
        want = recorded.read_text(encoding="ascii")[:128].strip()
    except (OSError, UnicodeDecodeError) as err:
        return f"has an unreadable checksum file {CHECKSUMS}/{recorded.name} ({err})"
    if _sha256(folder / "data" / name) != want:
        return (f"does not match the sha256 recorded in {CHECKSUMS}/{recorded.name} when it was committed (a byte "
                "inside it changed)")
    return None
