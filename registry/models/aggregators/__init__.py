"""Aggregators: local feature map (N, C, H, W) -> L2-normalised global descriptor (N, out_dim)."""
from .checks import check_feature_map
from .gem import GeM
from .netvlad import NetVLAD, alpha_from_clusters

__all__ = ["GeM", "NetVLAD", "alpha_from_clusters", "check_feature_map"]

from .._registry import register_aggregator

register_aggregator("netvlad", NetVLAD)
register_aggregator("gem", GeM)
