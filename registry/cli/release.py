"""`vpr release`: turn finished training runs into bundled releases (`build`), store the tensors several releases
share once (`bundle`, `unbundle`) and publish them to the Hugging Face Hub (`publish`).

    vpr release build --tag nordland --runs runs/release_clusvpr_seed0 runs/release_netvlad_seed0 \\
        --data-root path/to/datasets --reference-dir path/to/reference \\
        --untrained-start path/to/untrained/start.json
    vpr release publish --namespace ORG              # push, pull back, compare; print the pins to record
    vpr release publish --namespace ORG --record     # also write them to the packages' published.json
    vpr release bundle releases/netvlad_vgg16.nordland releases/gem_vgg16.nordland \\
        plugin/releases/clusvpr_vgg16.nordland --shared-out releases/_shared --in-place
    vpr release unbundle releases/gem_vgg16.nordland --out path/to/gem_vgg16.nordland

`build`: runs of one model compete on their final validation recall (the trainer's `--select-by` metric, after its
whitening choice); the test sets are measured only on the chosen run. Each release folder holds config.json (the
sha256 of every file, the training recipe and command, seed, code commit, the training budget and validation curve
(the stopping rule, the epochs each generation trained and why it stopped, the epoch chosen, per-epoch validation
recalls from the run's train/log.jsonl), evaluation protocol and the recalls measured on the stored half-precision
weights; with --untrained-start, those recalls against the untrained start on every dataset of that file),
model.safetensors (float16), centroids.h5 (the k-means centres and a sample of the descriptors they came from, enough
to re-derive NetVLAD's alpha) and README.md (the model card). It writes into the folder the model's bundled releases
live in (in the installed package: use an editable install of a clone), or --out-dir. The validation set
(nordland_val) is read from --data-root or $VPR_DATA.

`publish`: for each release bundled in the package it pushes the model with its card and half-precision weights to
`ORG/<model>-<tag>` (underscores become dashes), pulls that exact commit back into a fresh cache, checks that the
pulled descriptors of the embedded reference images equal the bundled model's bit for bit, and prints one
`name.tag = ORG/repo@<commit>` line per release. Recorded pins (`--record`, or by hand in the `published.json`
beside the release folder) make `pretrained=True` prefer the Hub copy over the bundled one. Log in first
(`hf auth login`) or pass --token.

`bundle`: the tensors that two or more of the given release folders hold bit for bit (the frozen layers they share;
with --share, only the tensors matching its patterns, each required to be identical in every release) are written
once into the --shared-out store as `<sha256>.safetensors`; each release keeps its other tensors in own.safetensors
beside bundle.json (which names every piece with its sha256 and the tensors it supplies), in place or in --out-dir.
Every bundle is read back and must rebuild its original model.safetensors byte for byte before that file is
removed. A bundled release loads, saves and pushes as the complete layout; `unbundle` writes that layout to a
folder (the model.safetensors it was made from, byte for byte).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .._util.options import UsageError, add_dataclass_arguments, option
from ._command import parser, run_command
from ._console import console_logging

PROG = "vpr release"


@dataclass
class BuildOptions:
    """`vpr release build`'s options."""

    runs: List[Path] = option(help="finished `vpr train` output folders", nargs="+", required=True, type=Path,
                              default_factory=list)
    tag: str = option("nordland", "release tag (default {default})")
    data_root: Optional[str] = option(None, "folder holding nordland/ (default: $VPR_DATA)")
    out_dir: Optional[Path] = option(None, "write releases here instead of the folder each model's bundled releases "
                                     "live in", type=Path)
    reference_dir: Optional[Path] = option(None, "also write each release's reference descriptors of the embedded "
                                           "probe images here (<name.tag>.npz; what the release tests compare "
                                           "against)", type=Path)
    untrained_start: Optional[Path] = option(None, "the JSON benchmarks/untrained_start.py wrote (e.g. "
                                             "benchmarks/untrained/start.json): each release's card compares it with "
                                             "its untrained start on every dataset there, marking where it is worse "
                                             "(default: the card says the comparison was not given)", type=Path,
                                             metavar="FILE")
    drop_whitening: List[str] = option(help="release these models without their PCA whitening (recorded in the "
                                       "release facts), e.g. when the whitening does not fit the size budget",
                                       nargs="+", default_factory=list, metavar="MODEL")


@dataclass
class PublishOptions:
    """`vpr release publish`'s options."""

    namespace: Optional[str] = option(None, "Hub user or organisation to publish under", required=True)
    releases: Optional[List[str]] = option(None, "only these releases (default: every one)", nargs="+",
                                           metavar="NAME.TAG")
    token: Optional[str] = option(None, "Hub token with write access (default: the logged-in one)")
    endpoint: Optional[str] = option(None, "Hub endpoint (default: huggingface_hub's, i.e. HF_ENDPOINT)")
    private: bool = option(False, "create the repositories as private")
    record: bool = option(False, "write the pins into the packages' published.json (then pretrained=True prefers "
                          "them)")


@dataclass
class BundleOptions:
    """`vpr release bundle`'s options."""

    folders: List[Path] = option(help="ordinary release folders (config.json + model.safetensors ...)", flag="folders",
                                 nargs="+", type=Path, default_factory=list)
    shared_out: Optional[Path] = option(None, "the store the shared tensors go to (_shared/ beside the release "
                                        "folders)", type=Path, required=True)
    out_dir: Optional[Path] = option(None, "write the bundled folders here (<out-dir>/<folder name>)", type=Path)
    in_place: bool = option(False, "bundle the folders where they are (their model.safetensors removed once the "
                            "bundle rebuilds it)")
    share: List[str] = option(help="share only the tensors matching these shell patterns (e.g. 'backbone.*'), "
                              "refusing unless each is bit-identical in every release (default: every tensor two "
                              "or more releases hold bit for bit)", nargs="+", default_factory=list, metavar="PATTERN")


@dataclass
class UnbundleOptions:
    """`vpr release unbundle`'s options."""

    folder: Optional[Path] = option(None, "a bundled release folder", flag="folder", type=Path)
    out: Optional[Path] = option(None, "the new folder for its ordinary layout", type=Path, required=True)


def build_parser(prog: str = PROG):
    """`vpr release build|publish|bundle|unbundle` (every option documented)."""
    p = parser(prog, __doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="{build,publish,bundle,unbundle}")
    add_dataclass_arguments(sub.add_parser("build", help="bundle finished training runs as releases"), BuildOptions)
    add_dataclass_arguments(sub.add_parser("publish", help="push every bundled release to the Hub, pull it back and "
                                           "compare"), PublishOptions)
    add_dataclass_arguments(sub.add_parser("bundle", help="store the tensors release folders share once"),
                            BundleOptions)
    add_dataclass_arguments(sub.add_parser("unbundle", help="write a bundled release's ordinary layout"),
                            UnbundleOptions)
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Parse, build or publish, print the reports (exit status 1 when a run or a release cannot be released)."""
    from ..hub import HubError
    from ..training.release import ReleaseError

    return run_command(prog, lambda: _main(build_parser(prog).parse_args(argv)), {ReleaseError: None, HubError: None})


def _bundle(o: BundleOptions) -> int:
    from ..hub import bundle_releases

    if o.in_place == (o.out_dir is not None):
        raise UsageError("give exactly one of --in-place and --out-dir")
    report = bundle_releases(o.folders, o.shared_out, o.out_dir, o.share)
    print(json.dumps(report, indent=2))
    print(f"{report['bytes_before']:,} bytes before, {report['bytes_after']:,} bundled")
    return 0


def _main(a) -> int:
    from ..training import release

    options = vars(a)
    action = options.pop("action")
    if action == "bundle":
        return _bundle(BundleOptions(**options))
    if action == "unbundle":
        from ..hub import unbundle_release

        print(f"wrote {unbundle_release(options['folder'], options['out'])}")
        return 0
    with console_logging():
        if action == "build":
            print(json.dumps(release.build(**options), indent=2))
            return 0
        o = PublishOptions(**options)
        pins = release.publish(o.namespace, o.releases, o.token, o.endpoint, o.private)
    for full, pin in pins.items():
        print(f"{full} = {pin}  (pulled back: descriptors bit-identical)")
    if o.record:
        for path in release.record(pins):
            print(f"recorded in {path}")
    else:
        print("record these pins with --record (or in the published.json beside each release folder)")
    return 0
