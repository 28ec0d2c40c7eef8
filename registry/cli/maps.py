"""`vpr map`: build a map of your own images, add to it, query it, describe it (registry.maps.Map).

    vpr map build site_map --images photos/ --model clusvpr_vgg16 --runtime onnx-int8 --places from-name
    vpr map add site_map --images more_photos/ --places from-name
    vpr map query site_map frame1.jpg frame2.jpg -k 5 [--sequence 10] [--json]
    vpr map info site_map

A problem with the map or the input (a missing or damaged file, another model, a bad image) is one line on stderr
and exit status 2.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from .._util.options import UsageError, add_dataclass_arguments, option, positive_int
from ._command import parser, run_command

PROG = "vpr map"
RUNTIME_CHOICES = ("torch", "onnx", "onnx-int8")
INDEX_CHOICES = ("auto", "flat", "ivfpq", "hnsw", "pca")
PLACES_HELP = ("place ids: from-name (the image's folder name, or its file name up to the first '_'), or "
               "csv:FILE (columns image,place); integer ids (7, -3) become integers; default: none (the image path; "
               "a map of integer ids needs them)")
COORDS_HELP = "coordinates: csv:FILE (columns image,lat,lon or image,utm_east,utm_north) or exif (GPS tags)"
ACTIONS_HELP = {
    "build": "extract a folder (or a list) of images into a new map: store, index, manifest",
    "add": "append images to a map as a new version (readers see it once it is committed)",
    "query": "the k best map images for each query image (--sequence L: the images are ordered frames)",
    "info": "size, versions, model, runtime, index, RAM and disk bytes per image",
}


@dataclass
class _MapArg:
    map: Optional[str] = option(None, "the map folder", flag="map")


@dataclass
class _Inputs:
    images: Optional[str] = option(None, "a folder of images (searched recursively) or a text file listing one image "
                                   "path a line", required=True, metavar="DIR|FILE_LIST")
    places: Optional[str] = option(None, PLACES_HELP, metavar="from-name|csv:FILE")
    coords: Optional[str] = option(None, COORDS_HELP, metavar="csv:FILE|exif")


@dataclass
class BuildOptions(_MapArg, _Inputs):
    """`vpr map build`'s options."""

    model: Optional[str] = option(None, "registry name or alias of the model (clusvpr_vgg16, gem_vgg16, ...)",
                                  required=True)
    pretrained: str = option("true", "weights: 'true' (the model's release), 'false' (random), org/name[@rev] or a "
                             "folder in the Hub layout (default {default})")
    runtime: str = option("torch", "what the map encodes with, kept in the map (default {default})",
                          choices=RUNTIME_CHOICES)
    index: str = option("auto", "index kind; auto picks one from the map size (default {default})",
                        choices=INDEX_CHOICES)
    chunk_size: int = option(256, "images extracted per committed chunk (default {default})", type=positive_int)


@dataclass
class AddOptions(_MapArg, _Inputs):
    """`vpr map add`'s options."""


@dataclass
class QueryOptions(_MapArg):
    """`vpr map query`'s options."""

    image: Optional[List[str]] = option(None, "query image files (with --sequence: ordered frames)", flag="image",
                                        nargs="+")
    k: int = option(5, "map images per query (1..100; default {default})", flag="-k", type=positive_int)
    sequence: Optional[int] = option(None, "match the images as an ordered route over the last L frames (SeqSLAM)",
                                     type=positive_int, metavar="L")
    json: bool = option(False, "print JSON instead of a table")


@dataclass
class InfoOptions(_MapArg):
    """`vpr map info`'s options."""

    json: bool = option(False, "print JSON instead of text")


def _usage(prog: str) -> str:
    lines = [f"usage: {prog} <action> MAP [options]   ({prog} <action> --help for its options)", "", "actions:"]
    lines += [f"  {name:<6} {summary}" for name, summary in ACTIONS_HELP.items()]
    return "\n".join(lines) + "\n"


def _inputs(args: Any, as_int: Optional[bool]):
    """(image paths, places, coords) from --images, --places and --coords."""
    from ..maps import inputs

    images, root = inputs.list_images(args.images)
    places = coords = None
    if args.places == "from-name":
        places = inputs.places_from_names(images, root, as_int)
    elif args.places and args.places.startswith("csv:"):
        places = inputs.places_from_csv(images, root, args.places[4:], as_int)
    elif args.places:
        raise UsageError(f"--places {args.places}: use from-name or csv:FILE")
    if args.coords == "exif":
        coords = inputs.coords_from_exif(images)
    elif args.coords and args.coords.startswith("csv:"):
        coords = inputs.coords_from_csv(images, root, args.coords[4:])
    elif args.coords:
        raise UsageError(f"--coords {args.coords}: use csv:FILE or exif")
    return images, places, coords


def _pretrained(text: str) -> Any:
    return {"true": True, "false": False, "none": False}.get(text.lower(), text)


def _build(args: BuildOptions) -> int:
    from ..maps import Map

    images, places, coords = _inputs(args, None)
    m = Map.build(args.map, images, model=args.model, pretrained=_pretrained(args.pretrained), runtime=args.runtime,
                  places=places, coords=coords, index=args.index, chunk_size=args.chunk_size)
    print(f"built {m.folder}: {m.count} images, {m.model_name} on {m.manifest['runtime']}, index "
          f"{m.info()['index']['kind']}, version {m.version}")
    return 0


def _add(args: AddOptions) -> int:
    from ..maps import Map

    m = Map.open(args.map)
    images, places, coords = _inputs(args, m.int_places)
    before = m.count
    version = m.add(images, places=places, coords=coords)
    print(f"added {m.count - before} images to {m.folder}: {m.count} images, version {version}")
    return 0


def _query(args: QueryOptions) -> int:
    import numpy as np

    from ..maps import Map
    from ..maps.core import ENCODE_BATCH

    m = Map.open(args.map)
    k = m.check_k(args.k)
    descriptors = np.concatenate([m.encode(args.image[i : i + ENCODE_BATCH])
                                  for i in range(0, len(args.image), ENCODE_BATCH)])
    single = m.search(descriptors, k)
    sequence: List[Any] = [None] * len(single)
    if args.sequence is not None:
        matcher = m.sequence_matcher(args.sequence, k)
        sequence = [{"length": args.sequence, "frames": min(i + 1, args.sequence),
                     "matches": [x.as_dict() for x in matcher.push(d)]} for i, d in enumerate(descriptors)]
    results = [{"name": name, "matches": [x.as_dict() for x in matches], "sequence": seq}
               for name, matches, seq in zip(args.image, single, sequence)]
    if args.json:
        print(json.dumps({"model": m.model_name, "map_version": m.version, "results": results}, indent=2))
        return 0
    for result in results:
        print(result["name"])
        _print_matches("  ", result["matches"])
        if result["sequence"] is not None:
            print(f"  sequence of the last {result['sequence']['frames']} frames (lower is better):")
            _print_matches("    ", result["sequence"]["matches"], "score")
    return 0


def _print_matches(indent: str, matches: List[Dict[str, Any]], value: str = "distance") -> None:
    """One line per match: rank, place (left out where the place is the image itself), distance or score, row,
    image and coordinates."""
    for x in matches:
        place = "" if x["place"] == x["image"] else f"place {x['place']}  "
        coords = "" if x["coords"] is None else f"  at ({x['coords'][0]:.6g}, {x['coords'][1]:.6g})"
        print(f"{indent}{x['rank']}. {place}{value} {x['distance']:.4f}  row {x['row']}  {x['image']}{coords}")


def _info(args: InfoOptions) -> int:
    from ..maps import Map

    info = Map.open(args.map).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    index = info["index"]
    print(f"map {info['path']}: {info['count']} images of {info['dim']} dims, version {info['version']} "
          f"({len(info['versions'])} committed)")
    print(f"model {info['model']} ({info['architecture']}, weights {info['source']}), runtime {info['runtime']}, "
          f"config hash {info['config_hash'][:12]}")
    print(f"index {index['kind']}" + "".join(f" {k}={index[k]}" for k in ("nlist", "m", "pca_dim", "refine")
                                             if index.get(k)) +
          f"; RAM {info['ram_bytes_per_image']:.0f} B and disk {info['disk_bytes_per_image']:.0f} B per image; "
          f"coordinates: {'yes' if info['has_coords'] else 'no'}")
    for v in info["versions"]:
        print(f"  version {v['version']}: {v['count']} images (+{v['added']}) at {v['time']}")
    return 0


ACTIONS: Dict[str, Any] = {"build": (BuildOptions, _build), "add": (AddOptions, _add),
                           "query": (QueryOptions, _query), "info": (InfoOptions, _info)}


def _run(prog: str, cls: type, act: Callable[[Any], int], argv: Sequence[str]) -> int:
    from ..datasets.images import ImageReadError
    from ..maps import MapError
    from ._console import console_logging

    def body() -> int:
        p = parser(prog, ACTIONS_HELP[prog.rsplit(" ", 1)[-1]])
        add_dataclass_arguments(p, cls)
        args = cls(**vars(p.parse_args(list(argv))))
        try:
            with console_logging():
                return act(args)
        except (MapError, ImageReadError) as err:
            sys.stderr.write(f"{prog}: error: {err}\n")
            return 2

    return run_command(prog, body)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Run `vpr map <action> ...`; 0 on success, 2 for a bad option or a problem with the map or its input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage(prog))
        return 0 if argv else 2
    if argv[0] not in ACTIONS:
        sys.stderr.write(f"{prog}: error: unknown action {argv[0]!r} (actions: {', '.join(ACTIONS)})\n")
        return 2
    cls, act = ACTIONS[argv[0]]
    return _run(f"{prog} {argv[0]}", cls, act, argv[1:])

