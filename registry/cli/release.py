"""`vpr release`: turn finished training runs into bundled releases (`build`) and publish them to the Hugging
Face Hub (`publish`).

    vpr release build --tag nordland --runs runs/release_clusvpr_seed0 runs/release_netvlad_seed0 \\
        --data-root path/to/datasets --reference-dir path/to/reference
    vpr release publish --namespace ORG              # push, pull back, compare; print the pins to record
    vpr release publish --namespace ORG --record     # also write them to the packages' published.json

`build`: runs of one model compete on their final validation recall (the trainer's `--select-by` metric, after its
whitening choice); the test sets are measured only on the chosen run. Each release folder holds config.json (the
sha256 of every file, the training recipe and command, seed, code commit, evaluation protocol and the recalls
measured on the stored half-precision weights), model.safetensors (float16), centroids.h5 (the k-means centres and a
sample of the descriptors they came from, enough to re-derive NetVLAD's alpha) and README.md (the model card). It
writes into the folder the model's bundled releases live in (in the installed package: use an editable install of
a clone), or --out-dir. The validation set (nordland_val) is read from --data-root or $VPR_DATA.

`publish`: for each release bundled in the package it pushes the model with its card and half-precision weights to
`ORG/<model>-<tag>` (underscores become dashes), pulls that exact commit back into a fresh cache, checks that the
pulled descriptors of the embedded reference images equal the bundled model's bit for bit, and prints one
`name.tag = ORG/repo@<commit>` line per release. Recorded pins (`--record`, or by hand in the `published.json`
beside the release folder) make `pretrained=True` prefer the Hub copy over the bundled one. Log in first
(`hf auth login`) or pass --token.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .._util.options import add_dataclass_arguments, option
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


def build_parser(prog: str = PROG):
    """`vpr release build|publish` (every option documented)."""
    p = parser(prog, __doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="{build,publish}")
    add_dataclass_arguments(sub.add_parser("build", help="bundle finished training runs as releases"), BuildOptions)
    add_dataclass_arguments(sub.add_parser("publish", help="push every bundled release to the Hub, pull it back and "
                                           "compare"), PublishOptions)
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Parse, build or publish, print the reports (exit status 1 when a run or a release cannot be released)."""
    from ..training.release import ReleaseError

    return run_command(prog, lambda: _main(build_parser(prog).parse_args(argv)), {ReleaseError: None})


def _main(a) -> int:
    from ..training import release

    options = vars(a)
    action = options.pop("action")
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
