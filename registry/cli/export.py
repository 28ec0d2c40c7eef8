"""`vpr export`: export a registry model to ONNX (dynamic batch and image size), checked with onnxruntime.

    vpr export clusvpr_vgg16 clusvpr.onnx --input-size 480 640 --pretrained true
    vpr export clusvpr_vgg16 clusvpr_int8.onnx --pretrained true --quantize int8 --calibration my_map_images/
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .._files import unwritable
from ..export import OPSET
from ..quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_FLOAT_CONVS
from ._console import console_logging

PROG = "vpr export"


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Export, verify, print what was written (exit status 0)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a registry model to ONNX (dynamic batch and image size), checked with onnxruntime.",
    )
    parser.add_argument("model", help="registry name or alias (clusvpr_vgg16, netvlad_vgg16, gem_vgg16, gem_resnet50)")
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--pretrained", default=None,
                        help="weights: 'true' (the model's release), org/name[@rev], a folder in the Hub layout, or "
                             "a reference .pth.tar; default: random weights")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="size to trace and verify at (default: the model's input size); the graph takes any size")
    parser.add_argument("--input-norm", choices=("native", "imagenet"), default="native",
                        help="input convention of the graph: the model's own, or ImageNet mean/std (default native)")
    parser.add_argument("--descriptor-dim", type=int, default=None,
                        help="keep this many leading whitening components (needs a fitted whitening)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check against PyTorch")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="write the int8 graph: the backbone's convolutions statically quantised (QDQ), "
                             "calibrated on --calibration images; aggregation and whitening stay float32")
    parser.add_argument("--calibration", nargs="+", default=None, metavar="PATH",
                        help="--quantize int8: real images from where the model will run (image files or folders "
                             "of them); --calibration-images of them, evenly spaced, are used")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                        help=f"--quantize int8: how many calibration images to use (default "
                             f"{DEFAULT_CALIBRATION_IMAGES})")
    parser.add_argument("--int8-float-convs", type=int, nargs="+", default=None, metavar="I",
                        help=f"--quantize int8: the backbone's convolutions kept float32, indices (-1: the last; "
                             f"default {' '.join(map(str, DEFAULT_FLOAT_CONVS))}, chosen on Nordland validation "
                             "places)")
    parser.add_argument("--allow-no-vnni", action="store_true",
                        help="--quantize int8 on a CPU without int8 dot-product instructions (slower than float32)")
    args = parser.parse_args(argv)
    if args.input_size is not None and min(args.input_size) < 1:
        parser.error(f"--input-size {args.input_size[0]} {args.input_size[1]}: both sides must be positive (the "
                     "model's valid range is checked next)")
    problem = unwritable(Path(args.output).expanduser().parent)
    if problem:
        parser.error(f"{args.output} cannot be written: {problem}; pass an output path in a folder you can write to")
    if args.quantize and not args.calibration:
        parser.error("--quantize int8 needs --calibration: image files or folders of real images (a few dozen from "
                     "the deployment's data)")
    if args.calibration and not args.quantize:
        parser.error("--calibration is for --quantize int8")
    if args.int8_float_convs is not None and not args.quantize:
        parser.error("--int8-float-convs is for --quantize int8")
    if args.calibration_images < 1:
        parser.error(f"--calibration-images must be >= 1, got {args.calibration_images}")
    if args.quantize:
        args.calibration = _calibration_files(parser, args.calibration, args.calibration_images)
    with console_logging():
        try:
            return _export(args)
        except ValueError as err:  # an input size or model argument outside its range: a bad option
            parser.error(str(err))


def _export(args: argparse.Namespace) -> int:
    from ..export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_metadata
    from ..factory import create

    pretrained: Any = {"true": True, None: False}.get(args.pretrained, args.pretrained)
    overrides: Dict[str, Any] = {"input_norm": args.input_norm}
    if args.descriptor_dim is not None:
        overrides["descriptor_dim"] = args.descriptor_dim
    model = create(args.model, pretrained=pretrained, **overrides)
    path = export_onnx(model, args.output, tuple(args.input_size) if args.input_size else None, args.opset,
                       verify=not args.no_verify, quantize=args.quantize, calibration=args.calibration,
                       require_vnni=not args.allow_no_vnni, int8_float_convs=args.int8_float_convs)
    meta = onnx_metadata(model)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {meta['architecture']}, input {INPUT_NAME} "
          f"(N, 3, H, W) normalised with mean {meta['mean']} std {meta['std']}, output {OUTPUT_NAME} "
          f"(N, {meta['descriptor_dim']})")
    if args.quantize:
        from ..runtimes import load_runtime

        facts = load_runtime(path).calibration
        cos = facts["cosine_to_float32_on_calibration"]
        print(f"int8: {facts['quantised_convs']} convolutions quantised (float32: "
              f"{', '.join(map(str, facts['float32_conv_indices'])) or 'none'}), {facts['method']} ranges from "
              f"{facts['num_images']} images; "
              f"cosine similarity to float32 on them {cos['mean']:.4f} mean, {cos['min']:.4f} worst. Run it with "
              f"registry.load_runtime('{path}').encode(images)")
    return 0


def _calibration_files(parser: argparse.ArgumentParser, paths: Sequence[str], n: int) -> List[Path]:
    """Image files given or found in the folders given (sorted), n of them evenly spaced."""
    suffixes = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
    files: List[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in suffixes)
        elif item.is_file():
            files.append(item)
        else:
            parser.error(f"--calibration: {item} is neither an image file nor a folder")
    if not files:
        parser.error(f"--calibration: no images ({', '.join(suffixes)}) in {', '.join(paths)}")
    step = max(1, len(files) // n)
    return files[::step][:n]
