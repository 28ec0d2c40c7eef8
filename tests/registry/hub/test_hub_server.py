"""The stand-in Hub answers the real huggingface_hub client as the Hub does (what the other Hub tests rely on)."""
from __future__ import annotations

import re
import socket

import pytest

from .helpers import TOKEN, NonLoopbackConnectionError


def _api():
    from huggingface_hub import HfApi

    return HfApi(token=TOKEN)


def _commit(api, repo_id, files, revision=None, message="test commit"):
    from huggingface_hub import CommitOperationAdd

    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in files.items()]
    return api.create_commit(repo_id, operations=ops, commit_message=message, revision=revision).oid


def test_commits_have_40_hex_ids_and_model_info_reports_the_head(hub_server):
    api = _api()
    api.create_repo("tester/plain")
    first = _commit(api, "tester/plain", {"a.txt": b"one"})
    second = _commit(api, "tester/plain", {"a.txt": b"two"})
    assert re.fullmatch(r"[0-9a-f]{40}", first) and re.fullmatch(r"[0-9a-f]{40}", second) and first != second
    assert api.model_info("tester/plain").sha == second
    assert api.model_info("tester/plain", revision=first).sha == first


def test_branches_tags_and_tree_listing(hub_server):
    api = _api()
    api.create_repo("tester/refs")
    base = _commit(api, "tester/refs", {"w.bin": b"\x00" * 10, "sub/x.txt": b"x"})
    api.create_tag("tester/refs", tag="v1", revision=base)
    api.create_branch("tester/refs", branch="dev")
    dev = _commit(api, "tester/refs", {"w.bin": b"\x01" * 10}, revision="dev")
    refs = api.list_repo_refs("tester/refs")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": base, "dev": dev}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": base}
    assert sorted(api.list_repo_files("tester/refs")) == [".gitattributes", "sub/x.txt", "w.bin"]
    top = {f.path: getattr(f, "size", None) for f in api.list_repo_tree("tester/refs", revision="v1")}
    assert top == {".gitattributes": top[".gitattributes"], "w.bin": 10, "sub": None}


def test_download_serves_bytes_and_commit_header(hub_server):
    from huggingface_hub import hf_hub_download

    api = _api()
    api.create_repo("tester/dl")
    oid = _commit(api, "tester/dl", {"f.bin": b"payload"})
    path = hf_hub_download("tester/dl", "f.bin")
    assert open(path, "rb").read() == b"payload"
    assert f"/snapshots/{oid}/" in path.replace("\\", "/")


def test_not_found_answers_are_typed_by_x_error_code(hub_server):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = _api()
    api.create_repo("tester/nf")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/absent", "f.bin")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("tester/nf", "f.bin", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("tester/nf", "f.bin")


def test_writes_without_a_valid_token_get_401(hub_server):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    for token in (False, "hf_wrong"):
        with pytest.raises(HfHubHTTPError) as info:
            HfApi(token=token).create_repo("tester/nope")
        assert info.value.response.status_code == 401
    assert "tester/nope" not in hub_server.repos


def test_private_repos_are_hidden_without_a_token(hub_server):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    api = _api()
    api.create_repo("tester/secret", private=True)
    _commit(api, "tester/secret", {"f.bin": b"s"})
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("tester/secret")
    assert open(hf_hub_download("tester/secret", "f.bin", token=TOKEN), "rb").read() == b"s"


def test_invalid_model_card_yaml_is_rejected(hub_server):
    api = _api()
    api.create_repo("tester/card")
    with pytest.raises(ValueError, match="Invalid metadata"):
        _commit(api, "tester/card", {"README.md": b"---\nlicense: [unclosed\n---\n# card\n"})


def test_guard_refuses_non_loopback_connections(loopback_only):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NonLoopbackConnectionError):
            sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routable
        with pytest.raises(NonLoopbackConnectionError):
            socket.getaddrinfo("huggingface.co", 443)
    finally:
        sock.close()
    assert loopback_only == ["('192.0.2.1', 443)", "huggingface.co"]
    loopback_only.clear()  # the attempts were this test's point: do not fail it at teardown
