"""The trust sweep's case list: deterministic (seeded) mutations of every artefact the zoo reads, bad values given to
its search calls and command lines, mutated uploads and form fields sent to the localization service, and mutated
images and places CSVs added to a map. A case is a JSON-able dict: surface, artefact, file (inside the artefact;
'@role' for a Lance file found by role), mutation, args, rehash (recompute the recorded sha256s after mutating), a
readable label and, for the service, the request (endpoint, query parameters, files, form fields, token and the
words its 4xx message must hold)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from trust_sweep_mutations import BAD_VALUES, json_paths

# artefact -> (surface, action, the artefact's files the generic byte mutations visit)
ARTEFACTS: Dict[str, Any] = {
    "sweep_gem": ("model", "model", ["config.json", "model.safetensors", "README.md"]),
    "sweep_netvlad": ("model", "model", ["config.json", "model.safetensors", "centroids.h5", "pca.h5"]),
    "sweep_clusvpr": ("model", "model", ["config.json", "model.safetensors", "centroids.h5", "pca.h5"]),
    "store": ("store", "store", ["@data0", "@data1", "@data2", "@manifest", "@manifest_old", "@hint", "@txn"]),
    "index_flat": ("index", "index", ["index.faiss", "places.json"]),
    "index_hnsw": ("index", "index", ["index.faiss", "places.json", "vectors.f16"]),
    "index_ivfpq": ("index", "index", ["index.faiss", "places.json"]),
    "runtime": ("runtime", "runtime", ["model.onnx"]),
    "map": ("map", "map", ["manifest.json", "model/config.json", "model/model.safetensors", "index/v3/index.faiss",
                           "index/v3/places.json", "store/@data0", "store/@manifest"]),
    "image.png": ("image", "image", [""]),
    "image.jpg": ("image", "image", [""]),
    "serve": ("serve", "serve", ["upload.png", "upload.jpg"]),
    "map_add": ("map_add", "map_add", ["add/images/009.png", "add/places.csv"]),
}
FLIPS = (0.0, 0.003, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 1.0)
RUNTIME_META = [{"input_config": {"input_size": [3, 12000, 12000]}}, {"descriptor_dim": 999}, {"kind": "other"},
                {"descriptor_dim": "BIG"}, {"min_side": 10**9}, {"config": "x"}, {"input_config": {}},
                {"descriptor_dim": 2**40}]
STORE_META = [{"count": 150_000_000}, {"count": 10**12, "chunk_size": 1}, {"count": 2**62, "chunk_size": 1},
              {"chunk_size": 0}, {"dim": 16}, {"dim": 2**31}, {"count": "x"}, {"count": "BIG"},
              {"store_id": "0" * 32}, {"config_hash": "0" * 64}, {"images_sha256": "0" * 64}, {"place_type": "int"},
              {"coords": True}, {"format": 99}, {"count": 25}, {"count": 23}, {"chunk_size": 10**12}, {"dim": True}]


def _case(surface: str, artefact: str, file: str, mutation: str, args: Dict[str, Any] = None,
          rehash: bool = False) -> Dict[str, Any]:
    args = args or {}
    shown = ", ".join(f"{k}={json.dumps(v)[:40]}" for k, v in args.items())
    label = f"{file or artefact}: {mutation}({shown})" + (" + rehash" if rehash else "")
    return {"surface": surface, "artefact": artefact, "file": file, "mutation": mutation, "args": args,
            "rehash": rehash, "label": label}


# mutations the file format itself cannot detect: a changed answer there is the format's limit, not the zoo's; keyed
# by (artefact, mutation) or (the mutated file's suffix, mutation)
JPEG_FLIP = "a JPEG carries no checksum of its entropy-coded pixels: a flipped byte there decodes to other pixels " \
            "without any error"
LIMITS = {("image.jpg", "flip"): JPEG_FLIP, (".jpg", "flip"): JPEG_FLIP}


def _byte_cases(artefact: str, surface: str, files: List[str], rng: np.random.Generator) -> List[Dict[str, Any]]:
    out = []
    for file in files:
        for frac in FLIPS:
            out.append(_case(surface, artefact, file, "flip", {"frac": frac}))
        out.append(_case(surface, artefact, file, "flip", {"frac": round(float(rng.random()), 4)}))
        for frac in (0.0, 0.5, 1.0):
            out.append(_case(surface, artefact, file, "truncate", {"frac": frac}))
        out += [_case(surface, artefact, file, kind) for kind in ("delete", "garbage", "append", "symlink_secret",
                                                                   "symlink_copy", "to_dir")]
    return out


def _json_cases(artefact: str, surface: str, file: str, doc: Any, rng: np.random.Generator,
                per_field: int = 2) -> List[Dict[str, Any]]:
    """Each field of a JSON file set to `per_field` bad values (seeded) and removed; the whole file deep, a 5000-digit
    number, a 50 MB string."""
    values = sorted(BAD_VALUES)
    out = []
    for keys in json_paths(doc):
        for value in rng.choice(values, size=per_field, replace=False):
            out.append(_case(surface, artefact, file, "json_set", {"keys": keys, "value": str(value)}))
        out.append(_case(surface, artefact, file, "json_drop", {"keys": keys}))
    out += [_case(surface, artefact, file, "json_deep"), _case(surface, artefact, file, "json_bignum")]
    if isinstance(doc, dict):
        out.append(_case(surface, artefact, file, "json_huge_string", {"key": next(iter(doc))}))
    return out


def _format_cases() -> List[Dict[str, Any]]:
    out = []
    for model in ("sweep_gem", "sweep_netvlad", "sweep_clusvpr"):
        for edit in ("nan", "shape", "dtype", "drop", "offsets", "header_length"):
            out.append(_case("model", model, "model.safetensors", "st_edit", {"edit": edit}, rehash=True))
    for model in ("sweep_netvlad", "sweep_clusvpr"):
        for file in ("centroids.h5", "pca.h5"):
            for edit in ("nan", "shape", "dtype", "drop"):
                out.append(_case("model", model, file, "h5_edit", {"edit": edit}, rehash=True))
    for changes in STORE_META:
        out.append(_case("store", "store", "", "lance_meta", {"changes": changes}))
    out += [_case("store", "store", "", "lance_meta", {"raw": raw}) for raw in ("deep", "not json", "[1, 2]")]
    out.append(_case("store", "store", "", "lance_foreign", {"other": "other_store"}))
    for changes in RUNTIME_META:
        out.append(_case("runtime", "runtime", "model.onnx", "onnx_edit", {"edit": "meta", "value": changes}))
    out += [_case("runtime", "runtime", "model.onnx", "onnx_edit", {"edit": "meta", "value": v})
            for v in ("deep", "not json")]
    out += [_case("runtime", "runtime", "model.onnx", "onnx_edit", {"edit": e}, rehash=rehash)
            for e in ("external", "custom_domain", "output_shape", "giant_constant") for rehash in (False, True)]
    out.append(_case("index", "index_hnsw", "vectors.f16", "vectors_nan", rehash=True))
    out.append(_case("index", "index_flat", "index.faiss", "faiss_swap", {"other": "index_ivfpq"}, rehash=True))
    for image in ("image.png", "image.jpg"):
        out += [_case("image", image, "", "image_edit", {"edit": e})
                for e in ("bomb", "header_16bit", "jpeg_header", "text", "same_16bit", "same_rgba")]
    return out


def _value_cases() -> List[Dict[str, Any]]:
    out = []
    for value in (2e9, 2**40, "inf", "nan", 0, -1, "64", True):
        out.append(_case("values", "index_hnsw", "", "api", {"call": "set_search_params", "name": "ef_search",
                                                           "value": value}))
    for value in (2e9, 0, -5, "nan"):
        out.append(_case("values", "index_ivfpq", "", "api", {"call": "set_search_params", "name": "nprobe",
                                                            "value": value}))
    for value in (0, -1, 10**9, 2**62, 1.5, "nan"):
        out.append(_case("values", "index_flat", "", "api", {"call": "search", "name": "k", "value": value}))
        out.append(_case("values", "map", "", "api", {"call": "map_query", "name": "k", "value": value}))
    for value in ("2e9", "0", "nan", "10000000000", "-3"):
        out.append(_case("values", "map", "", "cli", {"argv": ["map", "query", "-k", value], "flag": "-k"}))
    bench = [("--ef-search", "2e9", "hnsw"), ("--memory-budget", "inf", "auto"), ("--memory-budget", "nan", "auto"),
             ("--memory-budget", "-1", "auto"), ("--memory-budget", "1e400", "auto"), ("--nprobe", "0", "ivfpq"),
             ("--nprobe", "2e9", "ivfpq"), ("--refine", "1e12", "hnsw"), ("--hnsw-m", "2e9", "hnsw"),
             ("--ef-search", "inf", "hnsw"), ("--pq-nbits", "99", "ivfpq"), ("--ivf-nlist", "1e12", "ivfpq")]
    for flag, value, index in bench:
        out.append(_case("values", "images", "", "cli", {"argv": ["bench", "--index", index, flag, value],
                                                         "flag": flag}))
    for value in ("1e12", "0", "-1"):
        out.append(_case("values", "images", "", "cli", {"argv": ["map", "build", "--chunk-size", value],
                                                         "flag": "--chunk-size"}))
    return out


# ------------------------------------------------------------------------------------------------ serve, map add
# the unmutated request of each endpoint (a serve case changes one part of it; its answer is compared with this one's)
REQUESTS: Dict[str, Dict[str, Any]] = {
    "localize": {"endpoint": "localize", "params": {"k": "3"}, "files": [["images", "upload.png", "image/png"]]},
    "add": {"endpoint": "add", "files": [["images", "upload.png", "image/png"]], "fields": {"places": "[100]"}},
}
SERVE_FLIPS = (0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
# (endpoint, what the request changes, the words one of which the 4xx message must hold)
K_WORDS = ["k=", "query k"]  # FastAPI's validation message names the parameter "query k", the service's "k=..."
SERVE_FORMS = [("localize", {"params": {"k": k}}, K_WORDS) for k in ("-1", "0", "1000000000", str(2**70), "five",
                                                                      "1e3", "")] + [
    ("localize", {"params": {"k": "3", "heatmap": "yes"}}, ["heatmap"]),
    ("localize", {"params": {"k": "3", "stream": "../x"}}, ["stream"]),
    ("localize", {"files": []}, ["images"]),
    ("localize", {"files": [["photo", "upload.png", "image/png"]]}, ["images"]),
    ("localize", {"repeat": 17}, ["files"]), ("localize", {"content_type": "text/plain"}, ["multipart"]),
    ("localize", {"content_type": "multipart/form-data"}, ["multipart"]),
    ("localize", {"content_type": "application/json"}, ["multipart"]),
    ("localize", {"pad": 33 << 20}, ["--max-body"]),
    ("localize", {"files": [["images", "upload.jpg", "image/png"]]}, ["upload.jpg"]),
    ("add", {"fields": {}}, ["place"]), ("add", {"token": None}, ["token"]), ("add", {"token": "wrong"}, ["token"]),
    ("add", {"fields": {"places": '["x"]'}}, ["place"]), ("add", {"fields": {"places": "[1.5]"}}, ["place"]),
    ("add", {"fields": {"places": "[true]"}}, ["place"]), ("add", {"fields": {"places": "[null]"}}, ["place"]),
    ("add", {"fields": {"places": "[1e400]"}}, ["place"]), ("add", {"fields": {"places": "[NaN]"}}, ["place"]),
    ("add", {"fields": {"places": f"[{2**70}]"}}, ["place"]), ("add", {"fields": {"places": "[" + "9" * 5000 + "]"}},
                                                              ["place"]),
    ("add", {"fields": {"places": "[1, 2]"}}, ["places"]), ("add", {"fields": {"places": "not json"}}, ["places"]),
    ("add", {"fields": {"places": '{"a": 1}'}}, ["places"]), ("add", {"fields": {"places": "[[1]]"}}, ["place"]),
    ("add", {"fields": {"places": "[" * 100_000 + "]" * 100_000}}, ["places"]), ("add", {"repeat": 17}, ["files"]),
]
CSV_EDITS = ("bom", "crlf", "semicolon", "tabs", "no_place_column", "no_image_column", "duplicate_row",
             "duplicate_same", "missing_row", "empty_place", "nan", "inf", "float", "huge", "big_digits", "word",
             "huge_line", "nul", "quote", "header_only")


# the files an add that succeeds rewrites (the commit point, Lance's hint of its newest version): every other file that
# was there before stays as it was
COMMITS = ("map/manifest.json", "map/store/_versions/latest_version_hint.json")


def _serve_case(endpoint: str, file: str = "", mutation: str = "form", args: Dict[str, Any] = None,
                change: Dict[str, Any] = None, names: List[str] = None) -> Dict[str, Any]:
    request = {**REQUESTS[endpoint], **(change or {})}
    if file:  # the mutated file is the one uploaded
        request["files"] = [["images", file, "image/jpeg" if file.endswith(".jpg") else "image/png"]]
    case = _case("serve", "serve", file, mutation, args)
    shown = ", ".join(f"{k}={json.dumps(v)[:40]}" for k, v in (change or {}).items())
    case.update(request={**request, "names": names or [Path(file).name]},
                label=f"{endpoint} " + (case["label"] if file else f"form({shown})"))
    return case


def _serve_cases() -> List[Dict[str, Any]]:
    out = []
    for endpoint, files in (("localize", ("upload.png", "upload.jpg")), ("add", ("upload.png",))):
        for file in files:
            out += [_serve_case(endpoint, file, "flip", {"frac": f}) for f in SERVE_FLIPS]
            out += [_serve_case(endpoint, file, "truncate", {"frac": f}) for f in (0.0, 0.5, 1.0)]
            out += [_serve_case(endpoint, file, kind) for kind in ("garbage", "append")]
            out += [_serve_case(endpoint, file, "image_edit", {"edit": e})
                    for e in ("bomb", "header_16bit", "jpeg_header", "text", "same_rgba")]
    out.append(_serve_case("localize", "upload.png", "image_edit", {"edit": "same_16bit"}))
    out += [_serve_case(endpoint, change=change, names=names) for endpoint, change, names in SERVE_FORMS]
    return out


def _map_add_cases() -> List[Dict[str, Any]]:
    image, places = ARTEFACTS["map_add"][2]
    out = []
    for file in (image, places):
        out += [_case("map_add", "map_add", file, "flip", {"frac": f}) for f in SERVE_FLIPS]
        out += [_case("map_add", "map_add", file, "truncate", {"frac": f}) for f in (0.0, 0.5, 1.0)]
        out += [_case("map_add", "map_add", file, kind) for kind in ("garbage", "append", "symlink_secret")]
    out += [_case("map_add", "map_add", image, "image_edit", {"edit": e})
            for e in ("bomb", "header_16bit", "jpeg_header", "text", "same_rgba", "same_16bit")]
    out.append(_case("map_add", "map_add", places, "delete"))
    out += [_case("map_add", "map_add", places, "csv_edit", {"edit": e}) for e in CSV_EDITS]
    return out


def baseline_key(case: Dict[str, Any]) -> str:
    """The baseline a case's answer is compared with: its artefact's; for a request to the service, that of its
    endpoint with the same file uploaded."""
    request = case.get("request")
    if not request:
        return case["artefact"]
    return f"{case['artefact']}/{request['endpoint']}/" + (request["files"][0][1] if request["files"] else "")


def baseline_cases() -> List[Dict[str, Any]]:
    """One unmutated case per artefact; for the service, one per endpoint and upload."""
    out = []
    for artefact, (surface, _, files) in ARTEFACTS.items():
        requests = [None]
        if surface == "serve":
            requests = [{**REQUESTS[e], "files": [["images", f, "image/png"]], "names": []} for e in REQUESTS
                        for f in files]
        for request in requests:
            case = {"id": 0, "surface": surface, "artefact": artefact, "file": "", "mutation": "none", "args": {},
                    "rehash": False}
            if request is not None:
                case["request"] = request
            out.append(case)
    return out


def _limit(case: Dict[str, Any]) -> Any:
    return LIMITS.get((case["artefact"], case["mutation"])) or LIMITS.get((Path(case["file"]).suffix,
                                                                           case["mutation"]))


def all_cases(root: Path, seed: int = 0) -> List[Dict[str, Any]]:
    """Every case, in a fixed order, numbered from 1."""
    rng = np.random.default_rng(seed)
    cases: List[Dict[str, Any]] = []
    for artefact, (surface, _, files) in ARTEFACTS.items():
        if surface not in ("serve", "map_add"):  # theirs are made by _serve_cases and _map_add_cases
            cases += _byte_cases(artefact, surface, files, rng)
    for artefact, file, per_field in (("sweep_netvlad", "config.json", 2), ("sweep_gem", "config.json", 1),
                                      ("index_hnsw", "places.json", 2), ("index_ivfpq", "places.json", 1),
                                      ("map", "manifest.json", 1)):
        doc = json.loads((root / artefact / file).read_text())
        cases += _json_cases(artefact, ARTEFACTS[artefact][0], file, doc, rng, per_field)
    cases += _format_cases() + _value_cases() + _serve_cases() + _map_add_cases()
    for i, case in enumerate(cases, 1):
        case["id"] = i
        case["limit"] = _limit(case)
    return cases


def quick(cases: List[Dict[str, Any]], per_surface: int = 6) -> List[Dict[str, Any]]:
    """A few cases per surface, evenly spaced in each surface's list (the same ones every run)."""
    picked = []
    for surface in dict.fromkeys(c["surface"] for c in cases):
        mine = [c for c in cases if c["surface"] == surface]
        step = max(1, len(mine) // per_surface)
        picked += mine[::step][:per_surface]
    return sorted(picked, key=lambda c: c["id"])
