"""registry._util.atomic.atomic_path: files get the user's umask, a real write failure names the file and keeps the
earlier one."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from real_faults import write_under_limit

from registry._util.atomic import atomic_path, file_mode, folder_mode, umask


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def user_umask(request):
    """Set the process umask for one test, restored after it."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("user_umask", [0o022, 0o077, 0o002], indirect=True)
def test_an_atomic_write_gets_the_mode_the_umask_gives_a_new_file(tmp_path, user_umask):
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    with open(tmp_path / "plain.json", "w") as fh:  # what open() gives: the reference
        fh.write("{}")
    assert _mode(tmp_path / "out.json") == _mode(tmp_path / "plain.json") == 0o666 & ~user_umask


@pytest.mark.parametrize("user_umask", [0o022, 0o077], indirect=True)
def test_the_umask_is_read_without_being_changed(user_umask):
    assert umask() == user_umask and umask() == user_umask
    assert file_mode() == 0o666 & ~user_umask and folder_mode() == 0o777 & ~user_umask


def test_a_write_past_the_file_size_limit_names_the_file_and_keeps_the_earlier_one(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"earlier")
    result = write_under_limit("from registry._util.atomic import atomic_path", f"""
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"x" * (1 << 20))
    """, limit=64 * 1024)
    assert result["raised"] == "OSError" and result["errno"] == errno.EFBIG
    assert result["message"] == (f"[Errno {errno.EFBIG}] could not write {target}: the file would exceed the "
                                 "file-size limit (ulimit -f) or what the file system allows (File too large); the "
                                 "earlier data.bin is unchanged and no partial file is left")
    assert target.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_an_error_that_is_not_a_write_failure_passes_through_unchanged(tmp_path):
    with pytest.raises(PermissionError, match="^no$"):
        with atomic_path(tmp_path / "x") as tmp:
            tmp.write_text("half")
            raise PermissionError("no")
    assert list(tmp_path.iterdir()) == []


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_one_folder_writer_creates_replaces_as_a_whole_or_file_by_file(tmp_path):
    """staged_folder: a new folder by one rename; over an earlier one, replaced as a whole (a file the new one lacks
    is gone) or, given a layout, file by file (layout files replaced or removed, the user's other files kept); the
    folder and files get the umask's modes; nothing is left beside the target."""
    from registry._util.atomic import leftovers, staged_folder

    target = tmp_path / "out"
    with staged_folder(target) as stage:
        (stage / "a.bin").write_bytes(b"one")
        (stage / "b.bin").write_bytes(b"two")
    assert _files(target) == {"a.bin": b"one", "b.bin": b"two"}
    assert _mode(target) == folder_mode() and _mode(target / "a.bin") == file_mode()
    with staged_folder(target) as stage:
        (stage / "a.bin").write_bytes(b"three")
    assert _files(target) == {"a.bin": b"three"}
    (target / "notes.txt").write_bytes(b"mine")
    (target / "b.bin").write_bytes(b"old")
    with staged_folder(target, layout=("a.bin", "b.bin", "config.json"), last="config.json") as stage:
        (stage / "a.bin").write_bytes(b"four")
        (stage / "config.json").write_bytes(b"{}")
    assert _files(target) == {"a.bin": b"four", "config.json": b"{}", "notes.txt": b"mine"}
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_inside_the_folder_writer_leaves_the_earlier_folder_and_nothing_else(tmp_path):
    from registry._util.atomic import leftovers, staged_folder

    target = tmp_path / "out"
    with staged_folder(target) as stage:
        (stage / "a.bin").write_bytes(b"one")
    for layout in (None, ("a.bin",)):
        with pytest.raises(OSError, match="injected"):
            with staged_folder(target, layout=layout) as stage:
                (stage / "a.bin").write_bytes(b"half")
                raise OSError(errno.EIO, "injected")
        assert _files(target) == {"a.bin": b"one"} and leftovers(tmp_path) == []


def test_the_package_has_exactly_one_folder_writer():
    """Only registry._util.atomic stages or swaps folders: the saved PlaceIndex, the map store's create and the Hub
    layout write through staged_folder, and no other module makes a staging folder to rename into place."""
    import registry

    root = Path(registry.__file__).parent
    writers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if p.name not in ("_atomic.py", "atomic.py") and "staging_dir(" in p.read_text())
    assert writers == []
    users = {str(p.relative_to(root)) for p in root.rglob("*.py") if "staged_folder(" in p.read_text()}
    assert {"evaluation/index_files.py", "evaluation/store.py", "hub/_layout.py"} <= users
