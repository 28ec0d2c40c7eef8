"""A framework-neutral registry of visual place recognition models (ClusVPR, NetVLAD, GeM, plugins).

Importing this package loads no weights and no plugins: plugins are discovered lazily, at the first lookup. It
imports torch and huggingface_hub's client (`VPRModel` is a huggingface_hub `ModelHubMixin`).
"""
from ._util.ranges import ArgRange
from .errors import NonFiniteOutputError, NonFiniteValuesError, NotPublishedError, RuntimeUnavailableError
from .export import export_onnx
from .models import aggregators as _aggregators  # noqa: F401  (registers the bundled aggregators)
from .models import backbones as _backbones  # noqa: F401  (registers the bundled backbones)
from .models._registry import (
    PUBLISHED_FILE,
    ModelEntry,
    Release,
    find_releases,
    get_entry,
    list_aliases,
    list_models,
    load_plugins,
    register_aggregator,
    register_backbone,
    register_model,
    resolve_name,
    split_tag,
)
from .models.factory import build_vpr_model, create, model_info
from .models.model import VPRModel
from .runtimes import RUNTIMES, Runtime, compile_for, load_runtime
from .whitening import PCAWhitening

# The modules a plugin may import (models, aggregators, recipes); anything else of the core, and every `_private`
# name, may change without notice. The bundled ClusVPR plugin keeps to it like a third-party plugin would.
PLUGIN_SURFACE = frozenset({
    "registry", "registry.models.model", "registry.models.factory", "registry.models.timm_models",
    "registry.models.aggregators",
    "registry.models.aggregators.netvlad", "registry.whitening", "registry.training", "registry.training.config",
    "registry.training.losses", "registry.training.recipes", "registry.training.sources",
})

__all__ = [
    "PLUGIN_SURFACE",
    "PUBLISHED_FILE",
    "ArgRange",
    "ModelEntry",
    "Release",
    "NonFiniteOutputError",
    "NonFiniteValuesError",
    "NotPublishedError",
    "PCAWhitening",
    "RUNTIMES",
    "Runtime",
    "RuntimeUnavailableError",
    "VPRModel",
    "build_vpr_model",
    "compile_for",
    "create",
    "export_onnx",
    "find_releases",
    "get_entry",
    "list_aliases",
    "list_models",
    "load_plugins",
    "load_runtime",
    "model_info",
    "register_aggregator",
    "register_backbone",
    "register_model",
    "resolve_name",
    "split_tag",
]

# subpackages loaded at first use, so `import registry` stays cheap and `registry.evaluation.recall_at_n(...)`
# works without importing the subpackage first
_LAZY_SUBMODULES = ("bench", "datasets", "evaluation", "hub", "training")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
