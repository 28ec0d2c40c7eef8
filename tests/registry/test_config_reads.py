"""Every config.json the package reads outside the Hub loader (release folders found by find_releases, a bundled
release's recorded model_args, a run folder being released) and published.json go through the bounded JSON reader:
a crafted file is one named error (the file, the problem, the fix), never a bare RecursionError or ValueError."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import registry
from registry.hub import WrongModelError
from registry.models._registry import Release
from registry.models.factory import _bundled_model_args, release_model_args
from registry.training.release import folder_config

CRAFTED = {
    "nested": ("[" * 100000 + "]" * 100000, r"nests 100000 levels"),
    "long number": ('{"model_args": {"num_clusters": ' + "9" * 5000 + "}}", r"holds a number of 5000 characters"),
    "not UTF-8": ('{"x": "\udcff"}', r"is not UTF-8 text|is not valid JSON"),
}


def _release_folder(root: Path, text: str) -> Path:
    folder = root / "gem_vgg16.crafted"
    folder.mkdir(parents=True)
    data = text.encode("utf-8", "surrogateescape")
    (folder / "config.json").write_bytes(data)
    return folder


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_release_config_json_is_one_named_error(tmp_path, case):
    """Before: RecursionError / ValueError (int() of 5000 digits) / UnicodeDecodeError from json.loads."""
    text, message = CRAFTED[case]
    folder = _release_folder(tmp_path, text)
    with pytest.raises(WrongModelError, match=rf"config.json of the release folder {folder}.*({message})"):
        registry.find_releases(tmp_path, "gem_vgg16")
    _bundled_model_args.cache_clear()
    with pytest.raises(WrongModelError, match=rf"config.json of the bundled release {folder}.*({message})"):
        release_model_args(Release("crafted", folder, None))
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}.*({message})"):
        folder_config(folder)


def test_a_crafted_published_json_is_one_named_error(tmp_path):
    (tmp_path / "published.json").write_text('{"gem_vgg16.x": "' + "a" * 10 + '", "n": ' + "7" * 5000 + "}")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'published.json'} holds a number of 5000 characters"):
        registry.find_releases(tmp_path, "gem_vgg16")


def test_release_configs_the_zoo_writes_still_read_as_json_reads_them(tmp_path):
    config = {"model_args": {"num_clusters": 64, "input_size": [480, 640]}, "release": {"trained_on": "Nordland"}}
    folder = _release_folder(tmp_path, json.dumps(config))
    assert registry.find_releases(tmp_path, "gem_vgg16")["crafted"].trained_on
    assert release_model_args(Release("crafted", folder, None)) == {"num_clusters": 64, "input_size": (480, 640)}
    assert folder_config(folder) == config
