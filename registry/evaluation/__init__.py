"""Evaluation: descriptor extraction (in memory or to a resumable store), faiss indexes and PlaceIndex, Recall@N,
k-reciprocal re-ranking, PCA fitting, descriptor files."""
from .descriptor_files import load_descriptors, save_descriptors
from .extract import Preprocess, extract_dataset, extract_descriptors
from .index import DEFAULT_PCA_DIM, INDEX_KINDS, IndexFileError, IndexSpec, PlaceIndex, build_index, choose_index
from .pca import fit_whitening_if_needed, needs_whitening_fit
from .recall import DEFAULT_NS, drop_ignored, recall_at_n, recall_from_predictions, search
from .rerank import k_reciprocal_rerank
from .store import MapStore, StoreChangedError, StoreMismatchError, open_store
from .store_damage import StoreDamagedError
from .store_extract import extract_dataset_to_store, extract_to_store, model_config_hash

__all__ = [
    "DEFAULT_PCA_DIM",
    "INDEX_KINDS",
    "IndexFileError",
    "IndexSpec",
    "choose_index",
    "PlaceIndex",
    "build_index",
    "MapStore",
    "StoreChangedError",
    "StoreDamagedError",
    "StoreMismatchError",
    "extract_dataset_to_store",
    "extract_to_store",
    "model_config_hash",
    "open_store",
    "DEFAULT_NS",
    "drop_ignored",
    "Preprocess",
    "extract_dataset",
    "extract_descriptors",
    "fit_whitening_if_needed",
    "k_reciprocal_rerank",
    "load_descriptors",
    "needs_whitening_fit",
    "recall_at_n",
    "recall_from_predictions",
    "save_descriptors",
    "search",
]
