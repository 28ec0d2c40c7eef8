"""Images, weights and a killable build / add for the map tests (also run as a script by the kill tests)."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image
from training import tiny_vpr  # noqa: F401  (registers tiny_gem; tests/registry is on sys.path)

HERE = Path(__file__).resolve().parent

MODEL = "tiny_gem"


def write_images(folder: Path, n: int, seed: int = 0, start: int = 0) -> List[str]:
    """n smooth random colour images (32x48) named 000.png, 001.png, ... from `start`."""
    rng = np.random.default_rng(seed + start)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        coarse = rng.random((4, 6, 3))
        img = np.kron(coarse, np.ones((8, 8, 1))) * 0.8 + 0.2 * rng.random((32, 48, 3))
        path = folder / f"{i:03d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def save_weights(folder: Path, seed: int = 0) -> str:
    import torch

    import registry

    torch.manual_seed(seed)
    registry.create(MODEL).save_pretrained(folder)
    return str(folder)


def env() -> dict:
    repo = HERE.parents[2]
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), str(repo), os.environ.get("PYTHONPATH", "")]))


def _die_after(calls: int) -> None:
    """SIGKILL this process on the runtime's encode call number calls + 1 (a power cut, not an exception)."""
    from registry.runtimes.eager import TorchRuntime

    encode = TorchRuntime.encode
    count = {"n": 0}

    def dying(self, images):
        count["n"] += 1
        if count["n"] > calls:
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(self, images)

    TorchRuntime.encode = dying


if __name__ == "__main__":  # python map_helpers.py build|add MAP WEIGHTS DIE_AFTER IMAGE...
    from registry.maps import Map

    action, folder, weights, die_after, files = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
    if die_after >= 0:
        _die_after(die_after)
    if action == "build":
        Map.build(folder, files, model=MODEL, pretrained=weights, index="flat", chunk_size=4, progress=False)
    else:
        Map.open(folder).add(files, progress=False)
