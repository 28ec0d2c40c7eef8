"""Publish every bundled release to the Hugging Face Hub, pull each back, and check it bit for bit.

    python benchmarks/publish.py --namespace ORG              # push, pull, compare; print the pins to record
    python benchmarks/publish.py --namespace ORG --record     # also write them to the packages' published.json

For each release bundled in the package (`registry.list_models(pretrained=True)` with a bundled folder) it
pushes the model with its card and half-precision weights to `ORG/<model>-<tag>` (underscores become dashes),
pulls that exact commit back into a fresh cache, checks that the pulled descriptors of the embedded reference
images equal the bundled model's bit for bit, and prints one `name.tag = ORG/repo@<commit>` line per release.
Recorded pins (`--record`, or by hand in the `published.json` beside the release folder) make
`pretrained=True` prefer the Hub copy over the bundled one. Log in first (`hf auth login`) or pass --token.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

import registry
from registry import PUBLISHED_FILE
from registry.datasets import PROBE_IMAGES


def bundled_releases(names: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """`name.tag` -> bundled folder, for every release (or the `names` given) that ships a folder."""
    found = {}
    for full in registry.list_models(pretrained=True):
        base, tag = registry.split_tag(full)
        release = registry.get_entry(base).release(tag)
        if release.folder is not None:
            found[full] = release.folder
    if names:
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise SystemExit(f"publish.py: no bundled release named {unknown}; bundled: {sorted(found)}")
        found = {n: found[n] for n in names}
    return found


def repo_name(full: str) -> str:
    """Hub repository name of a release: `clusvpr_vgg16.nordland` -> `clusvpr-vgg16-nordland`."""
    return full.replace("_", "-").replace(".", "-")


@torch.no_grad()
def _descriptors(model: registry.VPRModel) -> torch.Tensor:
    from PIL import Image

    pre = model.transform()
    x = torch.stack([pre(Image.open(p).convert("RGB")) for p in PROBE_IMAGES.values()])
    return model.eval()(x)


def publish(namespace: str, names: Optional[Sequence[str]] = None, token: Optional[str] = None,
            endpoint: Optional[str] = None, private: bool = False) -> Dict[str, str]:
    """Push, pull back and compare every bundled release; returns `name.tag` -> `org/repo@commit`."""
    pins = {}
    for full, folder in bundled_releases(names).items():
        model = registry.VPRModel.from_pretrained(str(folder))
        # the bundled copy's stored precision, kept on the Hub
        dtype = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("weights_dtype")
        repo_id = f"{namespace}/{repo_name(full)}"
        commit = model.push_to_hub(repo_id, token=token, endpoint=endpoint, private=private, dtype=dtype,
                                   commit_message=f"Release {full}")
        with tempfile.TemporaryDirectory(prefix="clusvpr-publish-") as cache:
            pulled = registry.VPRModel.from_pretrained(f"{repo_id}@{commit}", cache_dir=cache, token=token,
                                                       endpoint=endpoint)
            if not torch.equal(_descriptors(model), _descriptors(pulled)):
                raise SystemExit(f"publish.py: {repo_id}@{commit} gives other descriptors than the bundled {full}")
        pins[full] = f"{repo_id}@{commit}"
        print(f"{full} = {pins[full]}  (pulled back: descriptors bit-identical)", flush=True)
    return pins


def record(pins: Dict[str, str]) -> List[Path]:
    """Write the pins into the `published.json` beside each release folder; returns the files written."""
    written = {}
    for full, pin in pins.items():
        base, tag = registry.split_tag(full)
        path = registry.get_entry(base).release(tag).folder.parent / PUBLISHED_FILE
        table = written.get(path) or (json.loads(path.read_text()) if path.is_file() else {})
        table[full] = pin
        written[path] = table
    for path, table in written.items():
        path.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return list(written)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespace", required=True, help="Hub user or organisation to publish under")
    p.add_argument("--releases", nargs="+", metavar="NAME.TAG", help="only these releases (default: every one)")
    p.add_argument("--token", help="Hub token with write access (default: the logged-in one)")
    p.add_argument("--endpoint", help="Hub endpoint (default: huggingface_hub's, i.e. HF_ENDPOINT)")
    p.add_argument("--private", action="store_true", help="create the repositories as private")
    p.add_argument("--record", action="store_true",
                   help="write the pins into the packages' published.json (then pretrained=True prefers them)")
    a = p.parse_args(argv)
    pins = publish(a.namespace, a.releases, a.token, a.endpoint, a.private)
    if a.record:
        for path in record(pins):
            print(f"recorded in {path}")
    else:
        print("record these pins with --record (or in the published.json beside each release folder)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
