"""registry._util.atomic: what a killed atomic write or staged save leaves, and how it is recognised."""
from __future__ import annotations

import os

from registry._util.atomic import atomic_path, is_temporary, leftovers, staging_dir


def _killed_write(target):
    """The temporary file `atomic_path(target)` writes, left behind as a SIGKILL before the rename would leave it."""
    with atomic_path(target) as tmp:
        tmp.write_text("half")
        kept = tmp.with_name(tmp.name + ".copy")
        os.link(tmp, kept)
    os.replace(kept, tmp)  # the writer finished, so put its temporary file back where the kill would have left it
    return tmp


def test_the_temporary_files_and_staging_folders_it_makes_are_recognised_for_their_target(tmp_path):
    target = tmp_path / "checkpoint.pt"
    left = _killed_write(target)
    stage = staging_dir(tmp_path / "run")
    assert left.parent == stage.parent == tmp_path and left != target
    assert is_temporary(left) and is_temporary(left, target) and not is_temporary(left, tmp_path / "best.pt")
    assert is_temporary(stage, tmp_path / "run") and not is_temporary(stage, tmp_path / "run.v2")
    assert not is_temporary(stage, tmp_path / "other" / "run")  # the same name in another folder


def test_only_names_of_its_shape_count(tmp_path):
    for name in (".run.abcd_123.tmp", ".a.b.0000zzzz.tmp"):
        assert is_temporary(tmp_path / name), name
    for name in ("run.abcd1234.tmp", ".run.abcd123.tmp", ".run.ABCD1234.tmp", ".abcd1234.tmp", ".run.abcd1234.tmp2",
                 ".notes.tmp"):
        assert not is_temporary(tmp_path / name), name
    assert is_temporary(tmp_path / ".run.v2.abcd1234.tmp", tmp_path / "run.v2")
    assert not is_temporary(tmp_path / ".run.v2.abcd1234.tmp", tmp_path / "run")


def test_leftovers_lists_a_folders_temporaries_or_one_targets(tmp_path):
    mine = [_killed_write(tmp_path / "log.jsonl"), staging_dir(tmp_path / "run")]
    other = staging_dir(tmp_path / "run.v2")
    (tmp_path / "log.jsonl").write_text("kept")
    (tmp_path / ".notes.tmp").write_text("not ours")
    assert leftovers(tmp_path) == sorted(mine + [other])
    assert leftovers(tmp_path, target=tmp_path / "run") == [mine[1]]
    assert leftovers(tmp_path / "missing") == []
