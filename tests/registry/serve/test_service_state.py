"""The service's state is made once: the map is opened once (an add grows the served map itself, then serves the
map the add made), and GET /v1/map answers from the facts computed at open and after each add, without walking
the map's folders per request."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serve_helpers import write_images

import registry.maps.building
from registry.maps import Map
from registry.serve.service import Service
from registry.serve.uploads import Limits, decode_upload

pytest.importorskip("lance")


def test_an_add_grows_the_served_map_and_info_answers_without_walking_folders(tiny_map, tmp_path, monkeypatch):
    folder = tmp_path / "map"
    shutil.copytree(tiny_map[0], folder)
    opens, walks = [], []
    folder_bytes = registry.maps.building.folder_bytes
    monkeypatch.setattr(registry.maps.building, "folder_bytes", lambda path: walks.append(path) or folder_bytes(path))
    service = Service(folder, open_map=lambda path: opens.append(path) or Map.open(path))
    service.load()
    assert len(opens) == 1 and len(walks) == 2  # opened once; its store and index folder measured once
    before = [service.info() for _ in range(3)]
    assert len(walks) == 2 and before[0]["count"] == 12 and before[0] == before[2]
    new = write_images(tmp_path / "new", 2, seed=7, start=50)
    uploads = [decode_upload(Path(p).read_bytes(), Path(p).name, Limits()) for p in new]
    served = service.map
    answer = service.add(uploads, places=None)
    assert len(opens) == 1 and service.map is not served  # no second Map opened; the served one swapped
    assert served.count == 12  # a request holding the map it started on keeps reading that version
    after = [service.info() for _ in range(3)]
    assert len(walks) == 4 and after[0]["count"] == 14 and after[0]["version"] == answer["version"]
    assert after[0] == Map.open(folder).info() | {"path": "map", "sequence_length": 10, "max_batch": 16}
    service.close()
