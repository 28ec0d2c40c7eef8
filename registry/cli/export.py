"""`vpr export`: export a registry model to ONNX (dynamic batch and image size), checked with onnxruntime.

    vpr export clusvpr_vgg16 clusvpr.onnx --input-size 480 640 --pretrained true
    vpr export clusvpr_vgg16 clusvpr_int8.onnx --pretrained true --quantize int8 --calibration my_map_images/
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._util.atomic import write_failure
from .._util.files import unwritable
from .._util.options import UsageError, add_dataclass_arguments, calibration_images_option, input_size_option, option
from ..datasets.base import list_images
from ..export import OPSET
from ..quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_FLOAT_CONVS
from ._command import parser, run_command
from ._console import console_logging

PROG = "vpr export"


@dataclass
class ExportOptions:
    """`vpr export`'s options."""

    model: Optional[str] = option(None, "registry name or alias (clusvpr_vgg16, netvlad_vgg16, gem_vgg16, "
                                  "gem_resnet50)", flag="model")
    output: Optional[str] = option(None, "the .onnx file to write", flag="output")
    pretrained: Optional[str] = option(None, "weights: 'true' (the model's release), org/name[@rev], a folder in the "
                                       "Hub layout, or a reference .pth.tar; default: random weights")
    input_size: Optional[Tuple[int, int]] = input_size_option("size to trace and verify at (default: the model's "
                                                              "input size; the model's range is checked); the graph "
                                                              "takes any size")
    input_norm: str = option("native", "input convention of the graph: the model's own, or ImageNet mean/std "
                             "(default {default})", choices=("native", "imagenet"))
    descriptor_dim: Optional[int] = option(None, "keep this many leading whitening components (needs a fitted "
                                           "whitening)", type=int)
    opset: int = option(OPSET, "ONNX opset (default {default})")
    no_verify: bool = option(False, "skip the onnxruntime check against PyTorch")
    quantize: Optional[str] = option(None, "write the int8 graph: the backbone's convolutions statically quantised "
                                     "(QDQ), calibrated on --calibration images; aggregation and whitening stay "
                                     "float32", choices=("int8",))
    calibration: Optional[List[str]] = option(None, "--quantize int8: real images from where the model will run "
                                              "(image files or folders of them); --calibration-images of them, "
                                              "evenly spaced, are used", nargs="+", metavar="PATH")
    calibration_images: int = calibration_images_option(DEFAULT_CALIBRATION_IMAGES, "--quantize int8: how many "
                                                        "calibration images to use (default {default})")
    int8_float_convs: Optional[List[int]] = option(None, "--quantize int8: the backbone's convolutions kept float32, "
                                                   "indices (-1: the last; default "
                                                   f"{' '.join(map(str, DEFAULT_FLOAT_CONVS))}, chosen on Nordland "
                                                   "validation places)", type=int, nargs="+", metavar="I")
    allow_no_vnni: bool = option(False, "--quantize int8 on a CPU without int8 dot-product instructions (slower "
                                 "than float32)")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """`vpr export`'s command line, generated from ExportOptions."""
    p = parser(prog, "Export a registry model to ONNX (dynamic batch and image size), checked with onnxruntime.")
    add_dataclass_arguments(p, ExportOptions)
    return p


def check(a: argparse.Namespace) -> None:
    """UsageError for an output that cannot be written or incomplete int8 options; the calibration files found."""
    problem = unwritable(Path(a.output).expanduser().parent)
    if problem:
        raise UsageError(f"{a.output} cannot be written: {problem}; pass an output path in a folder you can write to")
    if a.quantize and not a.calibration:
        raise UsageError("--quantize int8 needs --calibration: image files or folders of real images (a few dozen "
                         "from the deployment's data)")
    if a.calibration and not a.quantize:
        raise UsageError("--calibration is for --quantize int8")
    if a.int8_float_convs is not None and not a.quantize:
        raise UsageError("--int8-float-convs is for --quantize int8")
    if a.quantize:
        a.calibration = _calibration_files(a.calibration, a.calibration_images)


class WriteFailed(Exception):
    """The .onnx file could not be written (a full disk, a quota, the file-size limit): the OSError's message, which
    names the file and says no partial file is left."""


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Export, verify, print what was written (exit status 0; 2 for a bad option, the model's input-size range and
    model arguments included; 1 with one line for a write that ran out of room)."""
    def body() -> int:
        args = build_parser(prog).parse_args(argv)
        check(args)
        with console_logging():
            try:
                return _export(args)
            except ValueError as err:  # an input size or model argument outside its range: a bad option
                raise UsageError(str(err)) from None
            except OSError as err:
                if write_failure(err) is None:
                    raise
                raise WriteFailed(str(err).removeprefix(f"[Errno {err.errno}] ")) from None

    return run_command(prog, body, failures={WriteFailed: None})


def _export(args: argparse.Namespace) -> int:
    from ..export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_metadata
    from ..models.factory import create

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


def _calibration_files(paths: Sequence[str], n: int) -> List[Path]:
    """Image files given or found in the folders given (naturally sorted, as datasets list them), n of them evenly
    spaced."""
    files: List[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            try:
                files += list_images(item, "--calibration", recursive=True)
            except FileNotFoundError as err:
                raise UsageError(str(err)) from None
        elif item.is_file():
            files.append(item)
        else:
            raise UsageError(f"--calibration: {item} is neither an image file nor a folder")
    step = max(1, len(files) // n)
    return files[::step][:n]
