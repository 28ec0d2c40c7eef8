"""torch.hub entry points: `torch.hub.load(repo_or_dir, 'clusvpr_vgg16', pretrained=False)`.

Valid models: clusvpr_vgg16, netvlad_vgg16, gem_vgg16, gem_resnet50. `pretrained` takes False, True (the
model's default Hub repo at its pinned revision), `org/name[@rev]`, or a local directory in the Hub layout.
`input_norm="imagenet"`: the model takes RGB normalised with ImageNet's mean/std (what VPR-methods-evaluation and
similar runners feed) and converts it exactly to its own convention. `descriptor_dim=k`: the k leading components
of a fitted PCA whitening (e.g. 4096, 1024, 512, 256); other sizes raise a ValueError listing the valid ones.
"""
import clusvpr_plugin as _clusvpr_plugin  # noqa: F401  (torch.hub puts this folder on the path while loading)
import registry as _registry

dependencies = ["torch", "timm", "safetensors", "huggingface_hub", "h5py"]


def _entry(name: str, pretrained, overrides: dict):
    return _registry.create(name, pretrained=pretrained, **overrides)


def clusvpr_vgg16(pretrained=False, **overrides):
    """ClusVPR on VGG16 (CWT stack + OptLAD, 4096-d once whitened). Overrides: backbone_weights, input_size, ..."""
    return _entry("clusvpr_vgg16", pretrained, overrides)


def netvlad_vgg16(pretrained=False, **overrides):
    """NetVLAD (64 clusters) on VGG16 conv5_3, 4096-d once whitened."""
    return _entry("netvlad_vgg16", pretrained, overrides)


def gem_vgg16(pretrained=False, **overrides):
    """GeM pooling on VGG16 conv5_3, 512-d."""
    return _entry("gem_vgg16", pretrained, overrides)


def gem_resnet50(pretrained=False, **overrides):
    """GeM pooling on ResNet-50 layer3, 1024-d."""
    return _entry("gem_resnet50", pretrained, overrides)
