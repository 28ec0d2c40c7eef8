"""The model layer: VPRModel, its builder and entry registry, backbones, aggregators, preprocessing, timm entries."""
