"""Helpers of the service tests: tiny maps (the training tests' tiny_gem model, 32x48 images), and the service on
a real loopback socket, in this process (uvicorn in a thread) or in a child process (`vpr serve`)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import requests
import training.tiny_vpr  # noqa: F401  (registers tiny_gem; tests/registry is on sys.path)
from maps.map_helpers import write_images  # noqa: F401  (re-exported for the service tests)

REPO = Path(__file__).resolve().parents[3]
MODEL = "tiny_gem"
PLUGIN = "training.tiny_vpr"


def build_map(folder: Path, images: List[str], chunk_size: int = 256):
    import torch

    import registry
    from registry.maps import Map

    weights = folder.parent / f"{folder.name}-weights"
    torch.manual_seed(0)
    registry.create(MODEL).save_pretrained(weights)
    return Map.build(folder, images, model=MODEL, pretrained=str(weights), index="flat", chunk_size=chunk_size,
                     progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server in a thread of this process, serving `app` on a free loopback port."""

    def __init__(self, app, ready_path: str = "/readyz") -> None:
        import uvicorn

        self.app, self.port, self.ready_path = app, free_port(), ready_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        wait_ready(self.url, lambda: self.thread.is_alive(), path=self.ready_path)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    @property
    def service(self):
        return self.app.state.service


def wait_ready(url: str, alive, timeout: float = 120.0, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), f"the server at {url} stopped before it was ready"
        try:
            if requests.get(url + path, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server at {url} was not ready within {timeout} s")


def serve(folder, **options) -> Running:
    from registry.serve import create_app

    return Running(create_app(folder, **options))


def child_env() -> dict:
    """The environment of a child process: one thread, this checkout and tests/registry (tiny_gem) importable."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO / "tests" / "registry"), str(REPO), os.environ.get("PYTHONPATH", "")]))


class Child:
    """`vpr serve MAP` in a child process on a free loopback port; its log goes to a file beside the map."""

    def __init__(self, folder, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = child_env()
        self.log = Path(folder).parent / f"serve-{self.port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "registry.cli", "serve", str(folder), "--port",
                                          str(self.port), "--plugin", PLUGIN, *args], env=env, cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.url, lambda: self.proc.poll() is None)
        except AssertionError as err:
            self.stop()
            raise AssertionError(f"{err}: {self.log.read_text(errors='replace')[-3000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)


def files(*paths, names=None):
    """A multipart `images` field of these files (path or bytes)."""
    out = []
    for i, p in enumerate(paths):
        data = p if isinstance(p, bytes) else Path(p).read_bytes()
        name = names[i] if names else (Path(p).name if not isinstance(p, bytes) else f"upload{i}.png")
        out.append(("images", (name, data, "application/octet-stream")))
    return out


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no sample {name} in the metrics")


def wait_until(condition, timeout: float = 30.0, what: str = "the condition did not come true") -> None:
    """Polls `condition()` every 20 ms until it is true; AssertionError(`what`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(what)
