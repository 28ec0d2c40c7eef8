"""Fixtures for the Hub tests: a loopback-only network guard, the stand-in Hub server, and small models."""
from __future__ import annotations

import socket
from typing import Iterator, List

import pytest
import torch

from .helpers import (
    TINY,
    TOKEN,
    NonLoopbackConnectionError,
    TinyBackbone,
    hub_environment,
    initialise,
    is_loopback,
    register_tiny_netvlad,
)
from .server import HubServer


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch) -> Iterator[List[str]]:
    """Fail any connection or name lookup that is not loopback; yields the list of attempts (for the guard's test)."""
    attempts: List[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            attempts.append(str(address))
            raise NonLoopbackConnectionError(f"test tried to connect to {address}: only 127.0.0.1 / ::1 are allowed")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host):
            attempts.append(str(host))
            raise NonLoopbackConnectionError(f"test tried to resolve {host!r}: only loopback hosts are allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    if attempts:
        pytest.fail(f"non-loopback network access attempted: {attempts}")


@pytest.fixture
def hub_server(tmp_path) -> Iterator[HubServer]:
    """A fresh stand-in Hub on 127.0.0.1 with huggingface_hub pointed at it and an empty cache."""
    with HubServer({TOKEN: "tester"}) as server, hub_environment(tmp_path / "hf_home", server.endpoint):
        yield server


@pytest.fixture
def offline(monkeypatch) -> None:
    """HF_HUB_OFFLINE=1, as a user would set it (also patched where huggingface_hub read it at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def no_retry_sleep(monkeypatch) -> None:
    """Skip the client's back-off sleeps between retries (seconds each) when the Hub is unreachable."""
    from types import SimpleNamespace

    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture
def tiny_model_name(monkeypatch) -> str:
    """Registers `hubtest_tiny_netvlad` (a plugin-style model: tiny backbone + NetVLAD + whitening) for one test."""
    return register_tiny_netvlad(monkeypatch, TINY, "hubtest_tiny", TinyBackbone,
                                 "test model: tiny backbone + NetVLAD (4 clusters), 8-d")


@pytest.fixture
def tiny(tiny_model_name):
    """A fitted tiny model (weights, centres, whitening) and a batch of inputs for it."""
    import registry

    return initialise(registry.create(tiny_model_name), seed=0), torch.randn(2, 3, 32, 32)
