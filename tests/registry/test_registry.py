"""The registry: names, aliases, errors, plugin discovery, model_info."""
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from shared_paths import REPO

import registry
from registry.models._registry import PLUGIN_GROUP, ModelEntry


def test_lists_the_required_models():
    assert {"clusvpr_vgg16", "netvlad_vgg16", "gem_vgg16", "gem_resnet50"} <= set(registry.list_models())


def test_pattern_filters_models():
    assert registry.list_models("gem_*") == ["gem_resnet50", "gem_vgg16"]


def test_aliases_resolve_to_models():
    assert registry.resolve_name("clusvpr") == "clusvpr_vgg16"
    assert registry.resolve_name("netvlad") == "netvlad_vgg16"
    assert registry.resolve_name("gem") == "gem_vgg16"


def test_unknown_name_lists_closest_valid_names():
    with pytest.raises(KeyError, match="netvlad_vgg16"):
        registry.create("netvlad_vgg61")


def test_duplicate_registration_is_an_error():
    entry = registry.models._registry.get_entry("gem_vgg16")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(ModelEntry("gem_vgg16", entry.builder, "vgg16", "gem"))


def test_model_info_reports_the_facts():
    info = registry.model_info("clusvpr")
    assert info["backbone"] == "vgg16" and info["aggregator"] == "clusvpr"
    assert info["descriptor_dim"] == 4096 and info["input_size"] == (3, 480, 640)
    assert info["std"] == pytest.approx((1 / 255,) * 3)
    assert "nordland" in info["weights"] and info["default_release"] == "clusvpr_vgg16.nordland"
    assert "not released" in registry.model_info("gem_resnet50")["weights"]


def test_plugin_is_declared_as_an_entry_point():
    names = {ep.value for ep in entry_points(group=PLUGIN_GROUP)}
    assert "clusvpr_plugin" in names, "run `pip install -e .` so the plugin entry point is installed"


def test_create_finds_the_plugin_without_importing_it():
    code = (
        "import sys, registry\n"
        "assert 'clusvpr_plugin' not in sys.modules\n"
        "m = registry.create('clusvpr_vgg16', input_size=(64, 64))\n"
        "print(type(m.aggregator).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ClusVPRAggregator"


def test_importing_the_packages_does_no_heavy_work():
    code = (
        "import sys, gc, torch, registry, clusvpr_plugin, hubconf\n"
        "big = [t for t in gc.get_objects() if isinstance(t, torch.Tensor) and t.numel() > 10000]\n"
        "print(torch.cuda.is_initialized(), 'knn_cuda' in sys.modules, len(big))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False", "0"]


def test_recipes_come_from_their_own_entry_point_group():
    from registry.models._registry import declared_entry_points
    from registry.training.recipes import RECIPE_GROUP

    assert "clusvpr_plugin.pyramid" in {ep.value for ep in declared_entry_points(RECIPE_GROUP)}


def _installed_plugin(root, module: str, entry: str) -> dict:
    """Declare `module` (already written under `root`) as a distribution with a `vpr_registry.plugins` entry point,
    as `pip install` would leave it; returns the environment that puts `root` on a child process's path."""
    dist = root / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\n{entry} = {module}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def test_a_third_party_plugin_needs_only_the_public_api(tmp_path):
    """A tiny plugin in its own distribution (a package and an entry point, as `pip install` would leave them):
    it registers a backbone, a model with a bundled release and a timm entry point through public names only, and
    `registry.create`, `list_models`, `pretrained=True` and `timm.create_model` all find it."""
    package = tmp_path / "tiny_vpr_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "import torch\n"
        "from registry import ModelEntry, find_releases, register_backbone, register_model\n"
        "from registry.models.factory import build_vpr_model, pretrained_cfg\n"
        "from registry.models.timm_models import register_timm_model\n"
        "class Tiny(torch.nn.Module):\n"
        "    out_channels, stride = 8, 16\n"
        "    def __init__(self, weights=None, train_layers=None):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 8, 16, stride=16)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x)\n"
        "register_backbone('tinyplug', Tiny)\n"
        "register_model(ModelEntry('tinyplug_gem', build_vpr_model, 'tinyplug', 'gem',\n"
        "    default_args={'input_size': (64, 64)}, descriptor_dim=8, pretrained_cfg=pretrained_cfg(),\n"
        "    releases=find_releases(Path(__file__).parent / 'releases', 'tinyplug_gem')))\n"
        "register_timm_model('tinyplug_gem')\n"
    )
    env = _installed_plugin(tmp_path, "tiny_vpr_plugin", "tiny")
    code = (
        "import registry, timm, torch\n"
        "assert 'tinyplug_gem' in registry.list_models()\n"
        "model = registry.create('tinyplug_gem')\n"
        "model.save_pretrained(r'%s')  # the plugin's release, bundled beside its code\n"
        "print(model(torch.rand(2, 3, 64, 64)).shape[1])\n"
    ) % (package / "releases" / "tinyplug_gem.demo")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "8"
    code = (  # a fresh process: the release the plugin bundles is found and loads; timm builds the model too
        "import registry, timm, torch\n"
        "bundled = registry.create('tinyplug_gem', pretrained=True)\n"
        "print(bundled.config['source'], registry.list_models(pretrained=True))\n"
        "print(type(timm.create_model('tinyplug_gem')).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("bundled:tinyplug_gem.demo") and "tinyplug_gem.demo" in lines[0]
    assert lines[1] == "VPRModel"


def test_an_import_error_inside_a_plugin_names_the_plugin_instead_of_unknown_model(tmp_path):
    (tmp_path / "broken_vpr_plugin.py").write_text("import a_module_that_is_not_installed\n")
    env = _installed_plugin(tmp_path, "broken_vpr_plugin", "broken")
    code = (
        "import registry\n"
        "for attempt in range(2):\n"
        "    try:\n"
        "        registry.create('gem_vgg16')\n"
        "    except ImportError as err:\n"
        "        print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=tmp_path)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]  # every lookup says so, not only the first
    assert lines[0].startswith("VPR plugin 'broken' (broken_vpr_plugin, entry point group 'vpr_registry.plugins') "
                               "could not be imported: No module named 'a_module_that_is_not_installed'")


def test_each_model_has_its_own_minimum_input_side_read_from_its_entry():
    from registry.models.factory import min_input_side

    sides = {"gem_vgg16": 16, "gem_resnet50": 16, "netvlad_vgg16": 16, "clusvpr_vgg16": 32}
    for name, side in sides.items():
        assert min_input_side(name) == side
    small = {"num_clusters": 4, "whitening_dim": None}
    assert registry.create("clusvpr_vgg16", **small, input_size=(32, 32)).min_input_side == 32
    with pytest.raises(ValueError, match="input_size"):
        registry.create("clusvpr_vgg16", **small, input_size=(16, 320))


def test_a_core_model_gets_its_own_minimum_without_the_plugin():
    code = ("import sys, registry\n"
            "registry.models._registry._plugins_loaded = True  # as if no plugin were installed\n"
            "from registry.bench.config import MIN_INPUT_SIDE\n"
            "from registry.models.factory import min_input_side\n"
            "print(min_input_side('gem'), min_input_side('netvlad'), MIN_INPUT_SIDE, 'clusvpr_plugin' in sys.modules,"
            " 'clusvpr_vgg16' in registry.list_models())\n")
    printed = subprocess.check_output([sys.executable, "-c", code], text=True, cwd=REPO,
                                      env={**os.environ, "PYTHONPATH": str(REPO)})
    assert printed.split() == ["16", "16", "16", "False", "False"]
