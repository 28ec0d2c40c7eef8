"""`vpr serve`: serve a map built with `vpr map build` over HTTP (the `serve` extra: FastAPI and uvicorn).

    vpr serve my_map                                  # http://127.0.0.1:8000 : the page, /docs, /v1/localize
    vpr serve my_map --host 0.0.0.0 --port 8080 --token-file secret.txt    # reachable, adds allowed with the token

Read-only without --token-file. Several `vpr serve` processes (replicas) may serve one map folder behind any load
balancer: each holds only the read-only map and its own bounded stream buffers, and picks up versions committed by
`vpr map add` or by another replica.
"""
from __future__ import annotations

import argparse
import importlib
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .._util.options import UsageError, add_dataclass_arguments, option
from ._command import parser, run_command
from ._console import console_logging

PROG = "vpr serve"
MAX_TOKEN_BYTES = 4096


@dataclass
class ServeOptions:
    """`vpr serve`'s options."""

    map: Optional[str] = option(None, "the map folder (`vpr map build`)", flag="map")
    host: str = option("127.0.0.1", "address to bind (default {default}: this machine only; 0.0.0.0 for every "
                       "interface)")
    port: int = option(8000, "TCP port (default {default})", type=int)
    token_file: Optional[str] = option(None, "a file holding the bearer token that allows POST /v1/map/images "
                                       "(default: read-only)")
    max_batch: int = option(16, "most images per encode call (default {default})", type=int)
    max_wait_ms: float = option(5.0, "longest a query image waits for its batch to fill, ms (default {default})",
                                type=float)
    queue: int = option(64, "most images waiting to be encoded; more get 503 with Retry-After (default {default})",
                        type=int)
    queue_pixels: int = option(256_000_000, "most pixels the waiting images may hold together (default {default})",
                               type=int)
    workers_threads: int = option(1, "encode threads, each running whole batches (default {default})", type=int)
    sequence: int = option(10, "frames a stream's sequence match spans, L (default {default})", type=int)
    max_streams: int = option(256, "most live frame streams (default {default})", type=int)
    stream_ttl: float = option(600.0, "seconds a stream lives without a frame (default {default})", type=float)
    max_body: int = option(32 * 2**20, "most bytes per request (default {default})", type=int)
    max_pixels: int = option(16_000_000, "most pixels per image, checked before decoding (default {default})",
                             type=int)
    max_connections: int = option(256, "most open connections; more get 503 (default {default})", type=int)
    plugin: List[str] = option(help="import MODULE first (a plugin registering the map's model); repeatable",
                               default_factory=list, action="append", metavar="MODULE")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = parser(prog, "Serve a map over HTTP: POST /v1/localize, GET /v1/map, /healthz, /readyz, /metrics, /docs and "
                     "the page at /.")
    add_dataclass_arguments(p, ServeOptions)
    return p


def read_token(path: str) -> str:
    """The token in `path` (its first line, stripped), or UsageError naming the problem."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"--token-file {path}: no such file; write a long random token into it (for example "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt`)")
    data = file.read_bytes()[:MAX_TOKEN_BYTES + 1]
    lines = data.decode("utf-8", "replace").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token or len(data) > MAX_TOKEN_BYTES:
        raise UsageError(f"--token-file {path}: the file must hold one token on its first line (1 to "
                         f"{MAX_TOKEN_BYTES} bytes)")
    if file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        import logging

        logging.getLogger(__name__).warning("--token-file %s can be read by other users: chmod 600 it", path)
    return token


def check(a: argparse.Namespace) -> None:
    if not a.map:
        raise UsageError("give the map folder: vpr serve MAP (build one with `vpr map build`)")
    if not Path(a.map).is_dir():
        raise UsageError(f"{a.map} is not a folder: pass the folder `vpr map build` wrote")
    if not 0 <= a.port <= 65535:
        raise UsageError(f"--port {a.port} is not a TCP port (0..65535)")
    for name in ("max_batch", "queue", "workers_threads", "max_streams", "max_connections", "queue_pixels"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Serve until interrupted (exit status 0; 2 for a bad option, 1 when the serve extra is missing)."""
    from ..serve import ServeExtraMissing

    def body() -> int:
        args = build_parser(prog).parse_args(argv)
        check(args)
        token = read_token(args.token_file) if args.token_file else None
        with console_logging():
            return _serve(args, token)

    return run_command(prog, body, {ServeExtraMissing: None})


def _serve(args: argparse.Namespace, token: Optional[str]) -> int:
    from ..serve import create_app, require_serve_extra

    require_serve_extra()
    import uvicorn

    from ..serve.uploads import Limits

    for module in args.plugin:
        importlib.import_module(module)
    try:
        limits = Limits(max_body=args.max_body, max_pixels=args.max_pixels)
        app = create_app(args.map, token=token, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                         max_queue=args.queue, queue_pixels=args.queue_pixels, threads=args.workers_threads,
                         sequence_length=args.sequence, max_streams=args.max_streams, stream_ttl=args.stream_ttl,
                         limits=limits)
    except ValueError as err:
        raise UsageError(str(err)) from None
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=args.max_connections, log_level="info",
                timeout_graceful_shutdown=10)
    return 0
