"""ClusVPR (Xu, Shamsolmoali, Yang): CWT stack + OptLAD on VGG16, registered into `registry` (and timm)."""
from pathlib import Path

from registry import ModelEntry, find_releases, list_models, register_aggregator, register_model
from registry.models.factory import build_vpr_model, pretrained_cfg
from registry.models.timm_models import register_timm_model

from .aggregator import ClusVPRAggregator
from .convert import convert_reference_state_dict, load_reference_checkpoint
from .optlad import OptLAD

__all__ = ["ClusVPRAggregator", "OptLAD", "convert_reference_state_dict", "load_reference_checkpoint"]

CITATION = """@article{xu2023clusvpr,
  title   = {ClusVPR: Efficient Visual Place Recognition with Clustering-based Weighted Transformer},
  author  = {Xu, Yifan and Shamsolmoali, Pourya and Yang, Jie},
  journal = {arXiv preprint arXiv:2310.04099},
  year    = {2023}
}"""


def _register() -> None:
    if "clusvpr_vgg16" in list_models():
        return
    register_aggregator("clusvpr", ClusVPRAggregator)
    register_model(ModelEntry(
        "clusvpr_vgg16", build_vpr_model, "vgg16", "clusvpr",
        default_args={"num_clusters": 64, "whitening_dim": 4096}, descriptor_dim=4096,
        pretrained_cfg=pretrained_cfg(), reference_loader=load_reference_checkpoint,
        releases=find_releases(Path(__file__).resolve().parent / "releases", "clusvpr_vgg16"),
        description="ClusVPR: VGG16 conv5_3 + 4 CWT blocks + OptLAD (64 x 128), whitened to 4096-d",
        citation=CITATION,
    ), aliases=("clusvpr",))
    register_timm_model("clusvpr_vgg16")


_register()
