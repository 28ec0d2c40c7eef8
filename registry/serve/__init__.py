"""`vpr serve`: an HTTP localization service over a map built with `vpr map build` (registry.maps).

    from registry.serve import create_app
    app = create_app("my_map", token=None, max_batch=16, max_wait_ms=5, max_queue=64)   # an ASGI app (FastAPI)

Needs the `serve` extra (FastAPI, uvicorn, python-multipart, prometheus-client): `pip install 'clusvpr-zoo[serve]'`.
The API and its limits are listed by the running service at /docs (OpenAPI).
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

SERVE_EXTRA = "pip install 'clusvpr-zoo[serve]'"
# (importable module names, the package that provides them)
_NEEDED = ((("fastapi",), "fastapi"), (("uvicorn",), "uvicorn"),
           (("python_multipart", "multipart"), "python-multipart"), (("prometheus_client",), "prometheus-client"))


class ServeExtraMissing(ImportError):
    """A package of the `serve` extra is not installed."""


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require_serve_extra() -> None:
    """ServeExtraMissing naming the missing packages and the install command, unless all are importable."""
    missing = [package for modules, package in _NEEDED if not any(_importable(m) for m in modules)]
    if missing:
        raise ServeExtraMissing(f"the localization service needs {', '.join(missing)} (the `serve` extra): "
                                f"{SERVE_EXTRA}")


def create_app(map_folder: Any, token: Optional[str] = None, max_batch: int = 16, max_wait_ms: float = 5.0,
               max_queue: int = 64, **options: Any) -> Any:
    """The FastAPI app serving the map in `map_folder`. `token`: the bearer token that allows POST /v1/map/images
    (None: read-only). Further options are the fields of registry.serve.service.ServeConfig (threads,
    sequence_length, max_streams, stream_ttl, queue_pixels, reload_interval, limits)."""
    require_serve_extra()
    from .app import build_app
    from .service import ServeConfig, Service

    config = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, **options)
    return build_app(Service(map_folder, config, token=token))


__all__ = ["create_app", "require_serve_extra", "ServeExtraMissing", "SERVE_EXTRA"]
