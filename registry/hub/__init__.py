"""Hub I/O: save, push and pull models in the repository layout of DESIGN.md, through `huggingface_hub`.

Layout: config.json (timm-compatible, plus VPR facts and the sha256 of every other file), model.safetensors,
centroids.h5, pca.h5 and README.md rendered from MODEL_CARD.md.
"""
from .._files import sha256_file
from ._card import model_card, render_model_card
from ._layout import LAYOUT_FILES, save_pretrained
from ._load import from_pretrained, pull_centroids, pull_pca
from ._push import push_to_hub
from ._source import parse_source
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
    TamperedFileError,
    WrongModelError,
)

__all__ = [
    "CorruptedFileError",
    "FileNotInRepoError",
    "HubError",
    "HubOfflineError",
    "IncompatibleWeightsError",
    "LAYOUT_FILES",
    "NotLoggedInError",
    "NotPublishedError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "TamperedFileError",
    "WrongModelError",
    "from_pretrained",
    "model_card",
    "parse_source",
    "pull_centroids",
    "pull_pca",
    "push_to_hub",
    "render_model_card",
    "save_pretrained",
    "sha256_file",
]
