"""The artefacts the trust sweep mutates, and how each is loaded and queried: tiny randomly initialised models (a
three-conv backbone under GeM, NetVLAD and ClusVPR, registered through the public API as a plugin would), a map
store, saved PlaceIndex folders, ONNX runtime files, a map, image files, a map of integer place ids with images and
a places CSV to add to it, and a copy of it with two uploads for the localization service. Everything is built from
seeded synthetic data, so two builds give the same files up to the random ids Lance and the map give them. The
service is driven in process through its ASGI interface (its lifespan, then one request), as a server would drive
it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
from PIL import Image

IMAGE_HW = (32, 48)
MODELS = ("sweep_gem", "sweep_netvlad", "sweep_clusvpr")
N_IMAGES = 24


def register_models() -> None:
    """A three-conv backbone and three models over it (idempotent); every case process registers them."""
    from torch import nn

    import registry
    from registry import ModelEntry
    from registry.models.factory import build_vpr_model, pretrained_cfg

    if "sweep_gem" in registry.list_models():
        return

    class SweepCNN(nn.Module):
        """Three 3x3 convs, stride 4, 32 channels."""

        out_channels = 32
        stride = 4

        def __init__(self, weights=None, train_layers: str = "conv5") -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(32, 32, 3, padding=1))

        def forward(self, x):
            return self.features(x)

    registry.register_backbone("sweep_cnn", SweepCNN)
    common = {"input_size": IMAGE_HW, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    for name, agg, extra in (("sweep_gem", "gem", {}),
                             ("sweep_netvlad", "netvlad", {"num_clusters": 4, "whitening_dim": 8}),
                             ("sweep_clusvpr", "clusvpr", {"num_clusters": 4, "whitening_dim": 8, "cwt_depth": 1,
                                                           "knn_k": 4})):
        registry.register_model(ModelEntry(name, build_vpr_model, "sweep_cnn", agg, default_args={**common, **extra},
                                           pretrained_cfg=pretrained_cfg(), description=f"trust sweep ({agg})"))


def write_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> List[str]:
    """n smooth random colour images (32x48 PNG), 000.png, 001.png, ..."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.kron(rng.random((4, 6, 3)), np.ones((8, 8, 1))) * 0.8 + 0.2 * rng.random((32, 48, 3))
        path = folder / f"{i:03d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def query_tensor(seed: int = 1):
    """Two preprocessed query images (2, 3, 32, 48), the same in every process."""
    import torch

    return torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 3, *IMAGE_HW)).astype(np.float32))


def _random_model(name: str, seed: int):
    """A randomly initialised model with, where it has them, cluster centres (saved as centroids.h5) and a fitted
    whitening (so every layout file is written)."""
    import torch

    import registry

    torch.manual_seed(seed)
    model = registry.create(name, pretrained=False).eval()
    centroids = getattr(model.aggregator, "centroids", None)
    if centroids is not None:
        with torch.no_grad():
            centroids.copy_(torch.randn_like(centroids))
        model.aggregator.cluster_source = (centroids.detach().clone(), torch.randn(64, centroids.shape[1]))
    if model.whitening is not None:
        model.whitening.fit(torch.randn(4 * model.whitening.out_dim, model.whitening.in_dim))
    return model


def _save_model(name: str, folder: Path, seed: int):
    model = _random_model(name, seed)
    model.save_pretrained(folder)
    return model


def build(root: Path) -> Dict[str, Any]:
    """Every pristine artefact under `root`; returns what the cases need to know (paths, the store's hash)."""
    import registry
    from registry.evaluation import IndexSpec, PlaceIndex, extract_to_store
    from registry.maps import Map

    register_models()
    images = write_images(root / "images")
    models = {name: _save_model(name, root / name, seed=i) for i, name in enumerate(MODELS)}
    gem = registry.VPRModel.from_pretrained(root / "sweep_gem").eval()
    store = extract_to_store(gem, images, root / "store", chunk_size=8, device="cpu", progress=False)
    extract_to_store(gem, images[::-1], root / "other_store", chunk_size=8, device="cpu", progress=False)
    database = np.asarray(store.descriptors)
    for kind, spec in (("flat", IndexSpec("flat")),
                       ("hnsw", IndexSpec("hnsw", hnsw_m=8, refine=2, refine_from="disk")),
                       ("ivfpq", IndexSpec("ivfpq", nlist=2, m=4, nbits=4))):
        index = PlaceIndex(store.dim, spec)
        index.train(database)
        index.add(database, places=[f"p{i // 2}" for i in range(len(database))])
        index.save(root / f"index_{kind}")
    runtimes = {}
    try:
        rt = registry.compile_for(models["sweep_gem"], "onnx")
        (root / "runtime").mkdir()
        rt.save(root / "runtime" / "model.onnx")
        runtimes["onnx"] = "runtime/model.onnx"
    except ImportError:
        pass
    Map.build(root / "map", images[:8], model="sweep_gem", pretrained=str(root / "sweep_gem"), index="flat",
              chunk_size=4, progress=False)
    Image.open(images[0]).convert("RGB").save(root / "image.jpg", quality=90)
    shutil.copy(images[0], root / "image.png")
    _build_writers(root, images)
    facts = {"images": images, "config_hash": store.meta["config_hash"], "runtimes": runtimes}
    (root / "facts.json").write_text(json.dumps(facts))
    return facts


def _build_writers(root: Path, images: List[str]) -> None:
    """map_add/: a map of integer place ids (map/), four more images (add/images/) and their places CSV
    (add/places.csv); serve/: a copy of that map and the two uploads (upload.png, upload.jpg: images not in it)."""
    from registry.maps import Map

    Map.build(root / "map_add" / "map", images[:8], model="sweep_gem", pretrained=str(root / "sweep_gem"),
              index="flat", chunk_size=4, places=[i // 2 for i in range(8)], progress=False)
    (root / "map_add" / "add" / "images").mkdir(parents=True)
    for i in range(8, 12):
        shutil.copy(images[i], root / "map_add" / "add" / "images" / f"{i:03d}.png")
    (root / "map_add" / "add" / "places.csv").write_text("image,place\n" + "".join(f"{i:03d}.png,{i // 2}\n"
                                                                                   for i in range(8, 12)))
    shutil.copytree(root / "map_add" / "map", root / "serve" / "map", symlinks=True)
    shutil.copy(images[12], root / "serve" / "upload.png")
    Image.open(images[13]).convert("RGB").save(root / "serve" / "upload.jpg", quality=90)


# ------------------------------------------------------------------------------------------------ actions
def _load_model(path: Path, facts) -> Dict[str, Any]:
    import torch

    import registry

    model = registry.VPRModel.from_pretrained(path).eval()
    with torch.inference_mode():
        out = registry.compile_for(model, "torch").encode(query_tensor())
    return {"descriptors": out.numpy()}


def _open_store(path: Path, facts) -> Dict[str, Any]:
    from registry.evaluation import open_store

    alone = open_store(path)
    missing = alone.missing_chunks()
    store = open_store(path, facts["images"], facts["config_hash"])
    return {"missing": missing, "descriptors": np.asarray(store.descriptors), "images": store.images,
            "places": store.places, "rows": store.descriptors[[3, 0]]}


def _load_index(path: Path, facts) -> Dict[str, Any]:
    from registry.evaluation import PlaceIndex

    index = PlaceIndex.load(path)
    queries = np.random.default_rng(2).standard_normal((3, index.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    dist, ids = index.search(queries, 4)
    return {"dist": dist, "ids": ids, "places": list(index.places)}


def _load_runtime(path: Path, facts) -> Dict[str, Any]:
    import registry

    return {"descriptors": registry.load_runtime(path).encode(query_tensor()).numpy()}


def _open_map(path: Path, facts) -> Dict[str, Any]:
    from registry.maps import Map

    m = Map.open(path)
    return {"matches": [[tuple(vars(x).values()) if hasattr(x, "__dict__") else tuple(x) for x in row]
                        for row in m.query([facts["images"][1], facts["images"][9]], k=3)]}


def _read_image(path: Path, facts) -> Dict[str, Any]:
    from registry.datasets.images import open_rgb

    return {"pixels": np.asarray(open_rgb(path))}


def _add_to_map(path: Path, facts) -> Dict[str, Any]:
    """What `vpr map add map --images add/images --places csv:add/places.csv` does, then the map opened again: its
    version, every row's image, place and descriptor, and a query."""
    from registry.maps import Map, inputs

    m = Map.open(path / "map")
    images, root = inputs.list_images(str(path / "add" / "images"))
    places = inputs.places_from_csv(images, root, str(path / "add" / "places.csv"), m.int_places)
    m.add(images, places=places, progress=False)
    grown = Map.open(path / "map")
    return {"version": grown.version, "images": grown.store.images, "places": grown.store.places,
            "descriptors": np.asarray(grown.store.descriptors),
            "matches": [[x.as_dict() for x in row] for row in grown.query([facts["images"][9]], k=3)]}


# ------------------------------------------------------------------------------------------------ the service
SERVE_TOKEN = "trust-sweep-token"
BOUNDARY = "trustsweepboundary"


def _multipart(parts: List[Any], fields: Dict[str, str]) -> bytes:
    """A multipart/form-data body of (field, file name, bytes, content type) parts and text fields."""
    out = b""
    for field, name, data, ctype in parts:
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    return out + f"--{BOUNDARY}--\r\n".encode()


async def _http(app: Any, method: str, path: str, query: str = "", headers: Dict[str, str] = None,
                body: bytes = b"") -> Any:
    """One HTTP request to the ASGI `app`, in this process: (status, the body as JSON, or as text if it is not)."""
    import asyncio

    chunks = [body[i : i + (1 << 16)] for i in range(0, len(body), 1 << 16)] or [b""]
    done, sent = asyncio.Event(), []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "state": {}}

    async def receive():
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


async def _session(app: Any, calls: List[Any]) -> List[Any]:
    """The app started (its lifespan), ready (/readyz), each call made, then shut down."""
    import asyncio

    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                         inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    try:
        for _ in range(1200):
            status, ready = await _http(app, "GET", "/readyz")
            if status != 503 or "loading" not in str(ready):
                break
            await asyncio.sleep(0.05)
        return [await call() for call in calls]
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan


def _request(app: Any, path: Path, request: Dict[str, Any]):
    """The call that sends `request` (see trust_sweep_cases.REQUESTS) to the app."""
    from urllib.parse import urlencode

    parts = [[field, name, (path / name).read_bytes(), ctype] for field, name, ctype in request["files"]]
    parts *= request.get("repeat", 1)
    body = _multipart(parts, request.get("fields", {})) + b"\0" * request.get("pad", 0)
    headers = {"content-type": request.get("content_type", f"multipart/form-data; boundary={BOUNDARY}"),
               "content-length": str(len(body))}
    token = request.get("token", SERVE_TOKEN)
    if token is not None and request["endpoint"] == "add":
        headers["authorization"] = f"Bearer {token}"
    route = "/v1/localize" if request["endpoint"] == "localize" else "/v1/map/images"
    return lambda: _http(app, "POST", route, urlencode(request.get("params", {})), headers, body)


def _serve(path: Path, facts, request: Dict[str, Any]) -> Dict[str, Any]:
    """The service over the map copy (create_app, as `vpr serve --token-file` runs it) sent one request in this
    process: the status and the answer (its timings left out), or the error; after a 2xx add, the new rows' places
    and descriptors as the map, opened again, reads them."""
    import asyncio

    from registry.maps import Map
    from registry.serve import create_app

    app = create_app(path / "map", token=SERVE_TOKEN, max_wait_ms=0.0)
    [(status, body)] = asyncio.run(_session(app, [_request(app, path, request)]))
    out: Dict[str, Any] = {"status": status}
    if not 200 <= status < 300:
        out["error"] = body.get("error") if isinstance(body, dict) else body
        return out
    out["body"] = {k: v for k, v in body.items() if k != "timing_ms"}
    if request["endpoint"] == "add":
        grown = Map.open(path / "map")
        out.update(places=grown.store.places[8:], descriptors=np.asarray(grown.store.descriptors)[8:])
    return out


# artefact -> (its path under a case folder, the action that loads and queries it; the service's takes the request)
ACTIONS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "model": _load_model, "store": _open_store, "index": _load_index, "runtime": _load_runtime, "map": _open_map,
    "image": _read_image, "map_add": _add_to_map, "serve": _serve,
}


if os.environ.get("TRUST_SWEEP_WARM") == "1":  # the sweep's forkserver: plugins found once, not in every case
    register_models()
