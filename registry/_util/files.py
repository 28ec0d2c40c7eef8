"""File helpers shared by the Hub layer, the training feature cache and the command lines."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Union


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unwritable(folder: Path) -> Optional[str]:
    """Why `folder` cannot be created or written to (None when it can); nothing is created."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, so no folder can be created inside it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    return None
