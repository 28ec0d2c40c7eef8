"""VPRModel: backbone -> aggregator -> optional PCA whitening, giving L2-normalised global descriptors."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from huggingface_hub import ModelHubMixin
from torch import nn

from .. import hub
from .. import whitening as _whitening
from .._util.ranges import min_side
from ..errors import NonFiniteOutputError
from ..whitening import PCAWhitening
from . import _registry
from ._build import load_pretrained
from .preprocess import Preprocess

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

# ColorJitter of the ClusVPR/SFRS training recipe: brightness, contrast, saturation, hue.
TRAIN_JITTER = (0.7, 0.7, 0.7, 0.5)
PathLike = Union[str, os.PathLike]


def encode_images(net: nn.Module, images: torch.Tensor, device: Optional[torch.device] = None,
                  amp: Optional[bool] = None) -> torch.Tensor:
    """The inference step of `VPRModel.encode` and of registry.evaluation's extraction: images to `device` (default:
    the module's), channels_last and (unless amp=False) bfloat16 autocast on CUDA, float32 L2-normalised
    descriptors out. `net` is a VPRModel or its torch.compile wrapper. Gradients are the caller's business."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    images = images.to(device, non_blocking=True)
    amp = device.type == "cuda" if amp is None else amp
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with ctx:
        desc = net(images)
    finite = torch.isfinite(desc).all(dim=-1)
    if not bool(finite.all()):  # the images are finite (VPRModel checks them): the model's arithmetic is not
        rows = torch.nonzero(~finite).flatten().tolist()
        name = getattr(net, "name", type(net).__name__)
        raise NonFiniteOutputError(
            f"{name} gave NaN or Inf descriptors for {len(rows)} of {len(desc)} finite images (rows "
            f"{rows[:8]}{', ...' if len(rows) > 8 else ''}): its weights hold NaN/Inf or overflow"
            + (" in bfloat16 autocast (try amp=False)" if amp else "")
            + "; check them with torch.isfinite(p).all() for p in model.parameters(), or load good weights"
        )
    return F.normalize(desc.float(), dim=-1)


class VPRModel(nn.Module, ModelHubMixin, library_name=hub.LIBRARY_NAME, pipeline_tag="image-feature-extraction"):
    """A swappable backbone and aggregator with the input config and preprocessing that match them.

    A huggingface_hub `ModelHubMixin`: `save_pretrained`, `push_to_hub` and `from_pretrained` (with its hooks
    `_save_pretrained` and `_from_pretrained`) write and read this zoo's own layout (config.json with the sha256
    of every file, model.safetensors, centroids.h5, pca.h5, README.md). Where the mixin's defaults do not fit, the
    public methods differ: `save_pretrained` returns the folder and writes it atomically, deriving config.json from
    the model (no `config=`); `push_to_hub` returns the commit hash; `from_pretrained` builds the model with the
    registry builder config.json names and loads the weights strictly.
    """

    def __init__(
        self,
        backbone: nn.Module,
        aggregator: nn.Module,
        whitening: Optional[PCAWhitening] = None,
        input_config: Optional[Dict[str, Any]] = None,
        config: Optional[Dict[str, Any]] = None,
        input_conversion: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        if getattr(aggregator, "in_channels", backbone.out_channels) != backbone.out_channels:
            raise ValueError(
                f"aggregator takes {aggregator.in_channels} channels but the backbone gives {backbone.out_channels}"
            )
        self.backbone = backbone
        self.aggregator = aggregator
        self.whitening = whitening
        self.input_config = dict(input_config or {})
        self.config = dict(config or {})
        # input_norm="imagenet": maps the input's normalisation to the backbone's own (None: they agree)
        self.input_conversion = input_conversion

    @property
    def name(self) -> str:
        return self.config.get("architecture", type(self).__name__)

    @property
    def input_norm(self) -> str:
        """The input convention: 'native' (the backbone's own normalisation) or 'imagenet'."""
        return self.config.get("input_norm", "native")

    @property
    def descriptor_dim(self) -> int:
        """Current output width: the whitening's once fitted, else the aggregator's."""
        if self.whitening is not None and self.whitening.fitted:
            return self.whitening.out_dim
        return self.aggregator.out_dim

    @property
    def num_features(self) -> int:
        """timm's name for the output width."""
        return self.descriptor_dim

    @property
    def feature_info(self):
        """timm-style description of the local feature tap."""
        return [dict(num_chs=self.backbone.out_channels, reduction=self.backbone.stride, module="backbone")]

    @property
    def min_input_side(self) -> int:
        """The smallest image side the model takes: its backbone's stride times the smallest feature map its
        aggregator needs (the aggregator's `min_feature_size`, 1 when it declares none)."""
        return min_side(self.backbone, self.aggregator)

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor batch of images, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}; "
                "add a batch axis with images.unsqueeze(0) or convert to RGB"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"expected floating-point images, got dtype {images.dtype}; apply model.transform() "
                "(scales to float and normalises with the model's mean/std)"
            )
        side = self.min_input_side
        if images.shape[0] and min(images.shape[2:]) < side:
            raise ValueError(
                f"images of {images.shape[2]}x{images.shape[3]} are too small for {self.name}: expected (N, 3, H, W) "
                f"with H and W >= {side} (its input size is {tuple(self.input_config.get('input_size', ()))[1:]}); "
                "resize with model.transform()"
            )
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(images).all()):
            raise ValueError("the images contain NaN or Inf values, which would give NaN descriptors: check the "
                             "image decoding and normalisation (model.transform())")

    def _as_weights_dtype(self, images: torch.Tensor) -> torch.Tensor:
        """float64 (or any float other than the weights') input is converted, unless autocast chooses the dtype."""
        weight = next(self.parameters(), None)
        if weight is None or images.dtype == weight.dtype or torch.is_autocast_enabled(images.device.type):
            return images
        return images.to(weight.dtype)

    def to_native(self, images: torch.Tensor) -> torch.Tensor:
        """Images normalised as `input_config` says -> the backbone's own normalisation (identity for 'native')."""
        return images if self.input_conversion is None else self.input_conversion(images)

    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (N, C, H/16, W/16)."""
        self._check_images(images)
        return self.backbone(self.to_native(self._as_weights_dtype(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.ndim and images.shape[0] == 0:  # the same for every model
            self._check_images(images)
            weight = next(self.parameters(), None)
            dtype = weight.dtype if weight is not None else torch.float32
            return images.new_zeros((0, self.descriptor_dim), dtype=dtype)
        desc = self.aggregator(self.local_features(images))
        if self.whitening is not None:
            desc = self.whitening(desc)
        return F.normalize(desc, dim=-1)

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Named (N, H, W) maps on the feature grid of where the aggregator looks (for visualisation)."""
        if not hasattr(self.aggregator, "attention_maps"):
            raise NotImplementedError(f"{type(self.aggregator).__name__} provides no attention maps")
        return self.aggregator.attention_maps(self.local_features(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, amp: Optional[bool] = None) -> torch.Tensor:
        """Inference: bfloat16 autocast and channels_last on CUDA; float32 descriptors out (`encode_images`)."""
        return encode_images(self, images, amp=amp)

    def prepare_for_inference(self, device: str = "cuda", compile: bool = False) -> nn.Module:
        """Move to `device` in eval mode (channels_last on CUDA); optionally wrap in torch.compile."""
        self.eval().to(device)
        if torch.device(device).type == "cuda":
            self.to(memory_format=torch.channels_last)
        return torch.compile(self) if compile else self

    def set_whitening_dim(self, dim: Optional[int]) -> "VPRModel":
        """Keep the `dim` leading components of the fitted whitening, or drop it (`None`); config follows.

        The rebuilt model (`from_pretrained`, `save_pretrained`) gets `whitening_dim=dim`, so the choice persists.
        """
        return _whitening.set_whitening_dim(self, dim)

    def set_descriptor_dim(self, dim: int) -> "VPRModel":
        """Give `dim`-d descriptors: the `dim` leading components of the fitted whitening, or the aggregator's
        own descriptor (`aggregator.out_dim`: no whitening). Any other size raises a ValueError listing the valid
        ones. Like `set_whitening_dim`, the choice is recorded in config, so save/load keep it."""
        return _whitening.set_descriptor_dim(self, dim)

    def fit_whitening(self, descs) -> PCAWhitening:
        """Fit the whitening layer on un-whitened training descriptors (N, aggregator.out_dim)."""
        return _whitening.fit_model_whitening(self, descs)

    def transform(self, train: bool = False):
        """PIL image -> normalised tensor matching `input_config` (with the recipe's colour jitter if train)."""
        pre = Preprocess(self.input_config)
        if not train:
            return pre
        from torchvision import transforms as T

        return T.Compose([T.ColorJitter(*TRAIN_JITTER), pre])

    @property
    def citation(self) -> str:
        """BibTeX of the method, for model cards: the registry entry's, else a registered model's with the same
        aggregator; "" when none is recorded."""
        return _registry.citation(self.name, str(self.config.get("aggregator", "")))

    # --- huggingface_hub ModelHubMixin: the zoo's layout -------------------------------------------------------
    # save_pretrained (returns the folder) and push_to_hub (returns the commit hash) are the Hub layer's functions
    # themselves, whose first argument is the model: one signature and one docstring for method and function.
    save_pretrained = hub.save_pretrained
    push_to_hub = hub.push_to_hub

    def _save_pretrained(self, save_directory: Path) -> None:
        """ModelHubMixin's hook: the layout in `save_directory`, with the facts the model carries."""
        hub.save_pretrained(self, save_directory)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: PathLike,
        *,
        force_download: bool = False,
        token: Optional[Union[str, bool]] = None,
        cache_dir: Optional[PathLike] = None,
        local_files_only: bool = False,
        revision: Optional[str] = None,
        endpoint: Optional[str] = None,
        architecture: Optional[str] = None,
        **model_kwargs: Any,
    ) -> "VPRModel":
        """Load from `org/name`, `org/name@<commit or tag>` or a local folder in the Hub layout, every file checked
        against the sha256 config.json records; an instance of `cls` (WrongModelError when the architecture that
        config.json names builds another class).

        `architecture` (a registry name) makes loading fail unless the repository holds that model; `model_kwargs`
        change model arguments recorded in config.json (loading stays strict, so they must keep the weights'
        shapes), except `descriptor_dim`, applied after loading (the leading components of the stored whitening).
        """
        return cls._from_pretrained(
            model_id=pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token, endpoint=endpoint,
            architecture=architecture, **model_kwargs,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: PathLike,
        revision: Optional[str],
        cache_dir: Optional[PathLike],
        force_download: bool,
        local_files_only: bool,
        token: Optional[Union[str, bool]],
        endpoint: Optional[str] = None,
        architecture: Optional[str] = None,
        **model_kwargs: Any,
    ) -> "VPRModel":
        """ModelHubMixin's hook: the Hub layer resolves and verifies the files, the registry builder that
        config.json names rebuilds the model, and model.safetensors loads strictly
        (registry.models._build.load_pretrained, the load `registry.create(name, pretrained=...)` runs too)."""
        entry = None if architecture is None else _registry.get_entry(architecture)
        descriptor_dim = model_kwargs.pop("descriptor_dim", None)
        snap = hub.Snapshot(model_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                            token=token, endpoint=endpoint, force_download=force_download)
        return load_pretrained(snap, entry=entry, model_cls=cls, overrides=model_kwargs, descriptor_dim=descriptor_dim)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> "ModelCard":
        """The card save_pretrained writes as README.md, from this model's config and facts."""
        config = hub.build_config(self, hub.card_facts(self))
        return hub.model_card(config, *args, citation=self.citation, **kwargs)


