"""The localization service without its HTTP layer: the served map (opened read-only, re-opened when another process
commits a newer version), the dynamic batcher its query images are encoded in, the bounded frame streams, the
metrics, and the answers of /v1/localize and /v1/map/images as plain dicts.

The service holds nothing but the read-only map and the bounded stream buffers, so several replicas (processes or
machines) may serve one map folder behind any load balancer; an add commits through the map's own atomic commit,
and every replica picks the new version up within `reload_interval` seconds.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .._util.atomic import atomic_path
from ..evaluation.sequence import MAX_LENGTH
from ..maps.manifest import MapBusyError
from .batcher import Batcher, Encoded
from .metrics import Metrics
from .streams import StreamBuffers
from .uploads import MAX_K, BadRequest, Limits, Upload, check_k

log = logging.getLogger(__name__)
ADDED_FOLDER = "added_images"  # inside the map folder: the files added through the service, one folder per add


@dataclass(frozen=True)
class ServeConfig:
    """Batching, streams and limits of one service."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 64
    queue_pixels: int = 256_000_000  # pixels the queued images may hold together (3 bytes each decoded)
    threads: int = 1
    sequence_length: int = 10
    max_streams: int = 256
    stream_ttl: float = 600.0
    reload_interval: float = 1.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not isinstance(self.sequence_length, int) or not 1 <= self.sequence_length <= MAX_LENGTH:
            raise ValueError(f"the sequence length must be 1..{MAX_LENGTH} frames, got {self.sequence_length!r}")
        if not self.reload_interval >= 0:
            raise ValueError(f"reload_interval must be >= 0 seconds, got {self.reload_interval!r}")


def _open_map(folder: Path) -> Any:
    from ..maps import Map

    return Map.open(folder)


class Service:
    """One served map. `load()` opens it (the app runs it in a thread at start: /readyz says when it is done)."""

    def __init__(self, folder, config: Optional[ServeConfig] = None, token: Optional[str] = None,
                 open_map: Callable[[Path], Any] = _open_map) -> None:
        self.folder, self.config, self.token, self._open = Path(folder), config or ServeConfig(), token, open_map
        self.map: Any = None
        self.load_error: Optional[str] = None
        self._lock = threading.RLock()  # the map's search state: searches, stream pushes, reloads
        self._add_lock = threading.Lock()
        self._checked = 0.0
        c = self.config
        self.streams = StreamBuffers(self._new_matcher, c.max_streams, c.stream_ttl)
        self.metrics = Metrics(queue_depth=lambda: self.batcher.depth(), streams=lambda: len(self.streams))
        self.batcher = Batcher(self._encode, c.max_batch, c.max_wait_ms, c.max_queue, c.threads,
                               max_cost=c.queue_pixels, on_batch=self.metrics.observe_batch)

    # -- the map ---------------------------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            opened = self._open(self.folder)
        except Exception as err:  # reported by /readyz and the log; the process keeps answering /healthz
            self.load_error = f"cannot open the map {self.folder}: {err}"
            log.error(self.load_error)
            return
        opened.info()  # its facts computed once, before GET /v1/map asks for them
        with self._lock:
            self.map = opened
            self.metrics.map_version.set(opened.version)
        log.info("serving map %s: version %s, %s images, model %s", self.folder, opened.version, opened.count,
                 opened.model_name)

    @property
    def ready(self) -> bool:
        return self.map is not None

    def maybe_reload(self) -> None:
        """Re-open the map when another process (a replica's add, `vpr map add`) committed a newer version; checked
        at most every reload_interval seconds."""
        now = time.monotonic()
        if now - self._checked < self.config.reload_interval:
            return
        self._checked = now
        with self._lock:
            try:
                changed = self.map.reload_if_changed()
            except (OSError, ValueError) as err:  # a newer version that cannot be opened: keep serving this one
                log.warning("map %s: keeping version %s, the newer one cannot be opened: %s", self.folder,
                            self.map.version, err)
                return
            if changed:
                self.metrics.map_version.set(self.map.version)
                log.info("map %s now at version %s (%s images)", self.folder, self.map.version, self.map.count)

    def _encode(self, images: List[Any]) -> np.ndarray:
        return self.map.encode(images)

    def _new_matcher(self) -> Any:
        return self.map.sequence_matcher(self.config.sequence_length, k=min(MAX_K, self.map.count))

    def info(self) -> Dict[str, Any]:
        self.maybe_reload()
        with self._lock:
            info = dict(self.map.info())
        info["path"] = self.folder.name  # the folder's name only: where it lies on the server is not the client's
        info.update(sequence_length=self.config.sequence_length, max_batch=self.config.max_batch)
        return info

    def image_path(self, row: int) -> Path:
        self.maybe_reload()
        with self._lock:
            return self.map.image_path(row)

    # -- answers ---------------------------------------------------------------------------------------------------
    def answer(self, uploads: Sequence[Upload], encoded: Sequence[Encoded], k: int, stream: Optional[str],
               heatmap: bool) -> Dict[str, Any]:
        """The /v1/localize answer for these decoded uploads and their descriptors."""
        self.maybe_reload()
        started = time.monotonic()
        descriptors = np.stack([e.descriptor for e in encoded]).astype(np.float32, copy=False)
        with self._lock:
            current = self.map
            check_k(k, current.count)
            matches = current.search(descriptors, k)
            version = current.version
            sequences = self._push_stream(stream, descriptors, version, k) if stream else [None] * len(uploads)
        search_ms = (time.monotonic() - started) * 1000
        results = []
        for upload, found, sequence in zip(uploads, matches, sequences):
            results.append({"name": upload.name, "matches": [_match(m) for m in found], "sequence": sequence,
                            "heatmap": _heatmap(current, upload.image) if heatmap else None})
        return {"model": current.model_name, "map_version": version, "results": results,
                "timing_ms": {"queue": max(e.queue_s for e in encoded) * 1000,
                              "encode": max(e.encode_s for e in encoded) * 1000, "search": search_ms}}

    def _push_stream(self, stream: str, descriptors: np.ndarray, version: int, k: int) -> List[Dict[str, Any]]:
        buffer = self.streams.get(stream, version)
        out = []
        with buffer.lock:
            for descriptor in descriptors:
                found = buffer.matcher.push(descriptor)
                buffer.frames += 1
                out.append({"length": self.config.sequence_length, "frames": buffer.frames,
                            "matches": [_match(m) for m in list(found)[:k]]})
        return out

    def add(self, uploads: Sequence[Upload], places: Optional[List]) -> Dict[str, Any]:
        """Save the uploaded files under the map folder (names the server picks) and add them to the served map
        (`Map.added`: the writer lock, the commit); the map at the committed version, as the add made it, is then
        served."""
        with self._add_lock:
            folder = self.folder / ADDED_FOLDER / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
            folder.mkdir(parents=True)
            paths = []
            for i, upload in enumerate(uploads):
                target = folder / f"{i:02d}{upload.suffix}"
                with atomic_path(target) as tmp:
                    tmp.write_bytes(upload.data)
                paths.append(target)
            try:
                grown = self.map.added(paths, places=places)
            except MapBusyError as err:  # another process holds the map's writer lock
                shutil.rmtree(folder, ignore_errors=True)
                raise BadRequest(409, f"cannot add these images now: {err}; retry after the Retry-After "
                                      "seconds") from None
            except ValueError as err:  # MapError: place ids of the wrong kind, images it cannot read
                shutil.rmtree(folder, ignore_errors=True)
                raise BadRequest(400, f"cannot add these images: {err}") from None
            grown.info()  # its facts computed once, before GET /v1/map asks for them
            with self._lock:
                self.map = grown
                self.metrics.map_version.set(grown.version)
        return {"added": len(paths), "version": grown.version}

    def close(self) -> None:
        self.batcher.close()


def _match(match: Any) -> Dict[str, Any]:
    out = dict(match.as_dict())
    out["url"] = f"/v1/map/images/{match.row}"
    return out


def _heatmap(current: Any, image: Any) -> Dict[str, Any]:
    values = np.asarray(current.heatmap(image), np.float32)
    return {"height": int(values.shape[0]), "width": int(values.shape[1]),
            "values": np.round(values, 4).tolist()}
