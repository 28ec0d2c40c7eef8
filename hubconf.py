"""torch.hub entry points: `torch.hub.load(repo_or_dir, 'clusvpr_vgg16', pretrained=False)`.

One entry point per registered model (`registry.list_models()`). `pretrained` takes False, True (the model's
default release: its Hub repo at the pinned revision, else the copy bundled in the package), `org/name[@rev]`, or
a local directory in the Hub layout.
`input_norm="imagenet"`: the model takes RGB normalised with ImageNet's mean/std (what VPR-methods-evaluation and
similar runners feed) and converts it exactly to its own convention. `descriptor_dim=k`: the k leading components
of a fitted PCA whitening (e.g. 4096, 1024, 512, 256); other sizes raise a ValueError listing the valid ones.
"""
import clusvpr_plugin as _clusvpr_plugin  # noqa: F401  (torch.hub puts this folder on the path while loading)
import registry as _registry

dependencies = ["torch", "timm", "safetensors", "huggingface_hub", "h5py"]


def _entry_point(name: str):
    def entry(pretrained=False, **overrides):
        return _registry.create(name, pretrained=pretrained, **overrides)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{_registry.get_entry(name).description}. `pretrained`: False, True, 'org/name[@rev]' or a "
                     "folder; overrides: the model's arguments (input_size, backbone_weights, ...).")
    return entry


for _name in _registry.list_models():
    globals()[_name] = _entry_point(_name)
