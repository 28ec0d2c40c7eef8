"""Hub I/O: the repository layout, verified reads of it from a folder, a Hub repository or the cache, and pushes,
through `huggingface_hub`. Files only: rebuilding a model from config.json is the model layer's
(`registry.VPRModel.from_pretrained`); this package never imports it.

Layout: config.json (timm-compatible, plus VPR facts and the sha256 of every other file), model.safetensors,
centroids.h5, pca.h5 and README.md (a huggingface_hub ModelCard rendered from MODEL_CARD.md).
"""
from .._util.files import sha256_file
from ._card import model_card, render_model_card
from ._layout import CARD_FACTS, LAYOUT_FILES, LIBRARY_NAME, build_config, card_facts, save_pretrained
from ._load import pull_centroids, pull_pca, read_cluster_source, read_state_dict
from ._push import push_to_hub
from ._source import HUB_KWARGS, Snapshot, parse_source
from .errors import (
    CorruptedFileError,
    FileNotInRepoError,
    HubError,
    HubOfflineError,
    IncompatibleWeightsError,
    NotLoggedInError,
    NotPublishedError,
    RepoNotFoundError,
    RevisionNotFoundError,
    WrongModelError,
)

__all__ = [
    "CARD_FACTS",
    "CorruptedFileError",
    "FileNotInRepoError",
    "HUB_KWARGS",
    "HubError",
    "HubOfflineError",
    "IncompatibleWeightsError",
    "LAYOUT_FILES",
    "LIBRARY_NAME",
    "NotLoggedInError",
    "NotPublishedError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "Snapshot",
    "WrongModelError",
    "build_config",
    "card_facts",
    "model_card",
    "parse_source",
    "pull_centroids",
    "pull_pca",
    "push_to_hub",
    "read_cluster_source",
    "read_state_dict",
    "render_model_card",
    "save_pretrained",
    "sha256_file",
]
