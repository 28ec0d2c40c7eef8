"""push_to_hub / from_pretrained against the loopback Hub with the real huggingface_hub client."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

import registry
import registry.hub as hub

from .helpers import TOKEN, initialise, outputs

REPO = "tester/tiny"


def _gets(server, name: str) -> int:
    return sum(1 for m, url in server.requests if m == "GET" and url.endswith("/" + name))


def _push(model, repo: str = REPO, **kwargs) -> str:
    return model.push_to_hub(repo, token=TOKEN, **kwargs)


def _cached_blobs(cache: Path):
    return [p for p in cache.rglob("blobs/*") if p.is_file()]


def test_push_returns_the_commit_the_hub_reports(hub_server, tiny):
    from huggingface_hub import HfApi

    model, _ = tiny
    commit = _push(model)
    info = HfApi().model_info(REPO)
    assert commit == info.sha
    assert sorted(s.rfilename for s in info.siblings) == [
        ".gitattributes", "README.md", "centroids.h5", "config.json", "model.safetensors", "pca.h5"]


def test_pull_gives_bit_identical_descriptors(hub_server, tiny):
    model, images = tiny
    _push(model)
    loaded = registry.VPRModel.from_pretrained(REPO)
    assert torch.equal(outputs(model, images), outputs(loaded, images))


def test_a_pinned_commit_keeps_loading_the_old_weights(hub_server, tiny):
    model, images = tiny
    first = _push(model)
    before = outputs(model, images)
    second = _push(initialise(model, seed=1))
    assert first != second
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(f"{REPO}@{first}"), images), before)
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(REPO, revision=first), images), before)
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(REPO), images), outputs(model, images))


def test_a_tag_pins_a_push(hub_server, tiny):
    model, images = tiny
    _push(model, tag="v1.0")
    before = outputs(model, images)
    _push(initialise(model, seed=1))
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(f"{REPO}@v1.0"), images), before)


def test_push_to_a_branch_leaves_main_alone(hub_server, tiny):
    model, images = tiny
    main = _push(model)
    before = outputs(model, images)
    dev = _push(initialise(model, seed=1), branch="dev")
    assert hub_server.repos[REPO].branches == {"main": main, "dev": dev}
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(REPO), images), before)
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(f"{REPO}@dev"), images), outputs(model, images))


def test_repush_deletes_layout_files_the_model_no_longer_has(hub_server, tiny, tiny_model_name):
    model, _ = tiny
    _push(model)
    _push(registry.create(tiny_model_name))
    assert sorted(hub_server.repos[REPO].commits[hub_server.repos[REPO].branches["main"]].files) == [
        ".gitattributes", "README.md", "config.json", "model.safetensors"]


def test_repush_deletes_only_layout_files_in_one_commit(hub_server, tiny, tiny_model_name):
    from huggingface_hub import HfApi

    model, _ = tiny
    _push(model)
    HfApi(token=TOKEN).upload_file(path_or_fileobj=b"results of a run", path_in_repo="notes/run.txt", repo_id=REPO)
    commits = len(hub_server.repos[REPO].commits)
    _push(registry.create(tiny_model_name))
    repo = hub_server.repos[REPO]
    assert len(repo.commits) == commits + 1
    assert sorted(repo.commits[repo.branches["main"]].files) == [
        ".gitattributes", "README.md", "config.json", "model.safetensors", "notes/run.txt"]


def test_registry_create_pulls_a_repo_at_a_revision(hub_server, tiny, tiny_model_name):
    model, images = tiny
    commit = _push(model)
    loaded = registry.create(tiny_model_name, pretrained=f"{REPO}@{commit}")
    assert torch.equal(outputs(model, images), outputs(loaded, images))


def test_pretrained_true_uses_the_pinned_default_repo(hub_server, tiny, tiny_model_name, monkeypatch):
    model, images = tiny
    pinned = _push(model)
    before = outputs(model, images)
    _push(initialise(model, seed=1))  # main moves on; the default stays pinned
    entry = registry.models._registry.get_entry(tiny_model_name)
    monkeypatch.setattr(entry, "releases", {"demo": registry.Release("demo", None, f"{REPO}@{pinned}")})
    monkeypatch.setattr(entry, "default_release", "demo")
    assert torch.equal(outputs(registry.create(tiny_model_name, pretrained=True), images), before)
    assert torch.equal(outputs(registry.create(f"{tiny_model_name}.demo", pretrained=True), images), before)


def test_a_changed_file_on_the_hub_is_refused_and_not_kept(hub_server, tiny):
    model, _ = tiny
    _push(model)
    good = hub_server.file_bytes(REPO, "model.safetensors")
    hub_server.tamper(REPO, "model.safetensors", good[:-4] + b"\x00\x00\x00\x00")
    removal = r"model.safetensors.*deleted from the Hugging Face cache"
    with pytest.raises(hub.CorruptedFileError, match=removal):
        registry.VPRModel.from_pretrained(REPO)
    hub_server.tamper(REPO, "model.safetensors", good)  # once the Hub serves the right file again, loading works
    registry.VPRModel.from_pretrained(REPO)


def test_a_changed_file_on_the_hub_is_downloaded_again_only_once(hub_server, tiny):
    model, _ = tiny
    _push(model)
    good = hub_server.file_bytes(REPO, "model.safetensors")
    hub_server.tamper(REPO, "model.safetensors", good[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(hub.CorruptedFileError, match="downloaded again and still does not match"):
        registry.VPRModel.from_pretrained(REPO)
    assert _gets(hub_server, "model.safetensors") == 2  # the first download, and one with force_download=True


def test_corrupted_cache_file_is_detected_and_downloaded_again(hub_server, tiny, tmp_path, caplog):
    model, images = tiny
    _push(model)
    registry.VPRModel.from_pretrained(REPO)
    cache = tmp_path / "hf_home" / "hub"
    blob = max(_cached_blobs(cache), key=lambda p: p.stat().st_size)  # model.safetensors
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + b"\x01")
    with caplog.at_level("WARNING", logger="registry.hub"):
        loaded = registry.VPRModel.from_pretrained(REPO)
    assert "model.safetensors" in caplog.text and "downloading it again" in caplog.text
    assert torch.equal(outputs(loaded, images), outputs(model, images))
    assert blob.read_bytes() == good and _gets(hub_server, "model.safetensors") == 2


def test_a_corrupted_cached_file_offline_is_refused_deleted_and_downloaded_once_online(hub_server, tiny, tmp_path):
    model, images = tiny
    _push(model)
    registry.VPRModel.from_pretrained(REPO)
    blob = max(_cached_blobs(tmp_path / "hf_home" / "hub"), key=lambda p: p.stat().st_size)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")
    seen = hub_server.count()
    with pytest.raises(hub.CorruptedFileError, match="model.safetensors.*offline mode is on.*while online.*"
                                                     "deleted from the Hugging Face cache"):
        registry.VPRModel.from_pretrained(REPO, local_files_only=True)
    assert hub_server.count() == seen and not blob.exists()
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(REPO), images), outputs(model, images))


def test_force_download_fetches_every_file_again(hub_server, tiny):
    model, images = tiny
    _push(model)
    registry.VPRModel.from_pretrained(REPO)
    loaded = registry.VPRModel.from_pretrained(REPO, force_download=True)
    assert torch.equal(outputs(loaded, images), outputs(model, images))
    assert _gets(hub_server, "model.safetensors") == 2 and _gets(hub_server, "config.json") == 2


def test_offline_load_from_a_prefilled_cache_makes_no_request(hub_server, tiny, request):
    model, images = tiny
    commit = _push(model)
    registry.VPRModel.from_pretrained(REPO)
    seen = hub_server.count()
    request.getfixturevalue("offline")  # HF_HUB_OFFLINE=1 from here on
    for src in (REPO, f"{REPO}@{commit}"):
        assert torch.equal(outputs(registry.VPRModel.from_pretrained(src), images), outputs(model, images))
    assert hub_server.count() == seen


def test_local_files_only_loads_from_the_cache(hub_server, tiny):
    model, images = tiny
    _push(model)
    registry.VPRModel.from_pretrained(REPO)
    seen = hub_server.count()
    loaded = registry.VPRModel.from_pretrained(REPO, local_files_only=True)
    assert torch.equal(outputs(loaded, images), outputs(model, images))
    assert hub_server.count() == seen


def test_cache_dir_is_used(hub_server, tiny, tmp_path):
    model, _ = tiny
    _push(model)
    registry.VPRModel.from_pretrained(REPO, cache_dir=tmp_path / "own_cache")
    assert any(p.name == "config.json" for p in (tmp_path / "own_cache").rglob("*"))


def test_centres_alone_download_only_config_and_centroids(hub_server, tiny, tiny_model_name):
    model, _ = tiny
    _push(model)
    centroids, descriptors = hub.pull_centroids(REPO)
    assert torch.equal(centroids, model.aggregator.cluster_source[0])
    assert torch.equal(descriptors, model.aggregator.cluster_source[1])
    assert _gets(hub_server, "model.safetensors") == 0 and _gets(hub_server, "config.json") == 1


def test_pca_alone_whitens_another_runs_descriptors(hub_server, tiny):
    model, _ = tiny
    _push(model)
    pca = hub.pull_pca(REPO)
    x = torch.nn.functional.normalize(torch.randn(3, pca.in_dim), dim=-1)
    assert torch.allclose(pca(x), model.whitening(x), atol=1e-6)
    assert _gets(hub_server, "model.safetensors") == 0


# --- errors users can act on ---------------------------------------------------------------------------------

def test_no_network_says_so_and_how_to_load_locally(hub_server, tiny, no_retry_sleep):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()  # nothing listens there: connections are refused, as with no network
    with pytest.raises(hub.HubOfflineError) as info:
        registry.VPRModel.from_pretrained(REPO, endpoint=closed)
    message = str(info.value)
    assert "could not be reached" in message and "path/to/folder" in message and "HF_HUB_OFFLINE=1" in message


def test_push_to_an_unreachable_hub_says_so(hub_server, tiny, no_retry_sleep):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()  # nothing listens there: connections are refused, as with no network
    model, _ = tiny
    with pytest.raises(hub.HubOfflineError, match="cannot push to tester/tiny: the Hub at .* could not be reached"):
        model.push_to_hub(REPO, token=TOKEN, endpoint=closed)


def test_offline_mode_with_an_empty_cache_says_so(hub_server, tiny, offline):
    with pytest.raises(hub.HubOfflineError, match="offline mode is on.*not in the cache"):
        registry.VPRModel.from_pretrained(REPO)


def test_unknown_repo_says_to_check_the_id_or_log_in(hub_server):
    with pytest.raises(hub.RepoNotFoundError, match="tester/absent was not found.*hf auth login"):
        registry.VPRModel.from_pretrained("tester/absent")


def test_unknown_revision_names_it(hub_server, tiny):
    model, _ = tiny
    _push(model)
    with pytest.raises(hub.RevisionNotFoundError, match="'v9' does not exist in tester/tiny"):
        registry.VPRModel.from_pretrained(f"{REPO}@v9")


def test_repo_without_the_layout_says_what_is_missing(hub_server):
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=TOKEN)
    api.create_repo("tester/other")
    api.create_commit("tester/other", operations=[CommitOperationAdd("weights.bin", b"x")], commit_message="x")
    with pytest.raises(hub.FileNotInRepoError, match="has no config.json"):
        registry.VPRModel.from_pretrained("tester/other")


def test_missing_optional_file_is_named(hub_server, tiny_model_name):
    _push(registry.create(tiny_model_name))
    with pytest.raises(hub.FileNotInRepoError, match="has no pca.h5.*fit_whitening"):
        hub.pull_pca(REPO)


def test_push_without_a_token_asks_to_log_in_before_any_request(hub_server, tiny):
    model, _ = tiny
    with pytest.raises(hub.NotLoggedInError, match="hf auth login"):
        model.push_to_hub(REPO)
    assert hub_server.count() == 0


def test_push_with_a_rejected_token_asks_to_log_in(hub_server, tiny):
    model, _ = tiny
    with pytest.raises(hub.NotLoggedInError, match="rejected the token"):
        model.push_to_hub(REPO, token="hf_expired")
    assert REPO not in hub_server.repos


def test_logged_in_token_file_is_used_for_push(hub_server, tiny, tmp_path):
    model, _ = tiny
    (tmp_path / "hf_home" / "token").write_text(TOKEN)
    assert len(model.push_to_hub(REPO)) == 40


def test_config_of_another_model_is_refused(hub_server, tiny):
    model, _ = tiny
    _push(model)
    with pytest.raises(hub.WrongModelError, match="holds a 'hubtest_tiny_netvlad' model, not 'gem_vgg16'"):
        registry.create("gem_vgg16", pretrained=REPO)


def test_private_repo_needs_a_token_to_pull(hub_server, tiny):
    model, images = tiny
    _push(model, private=True)
    with pytest.raises(hub.RepoNotFoundError, match="private"):
        registry.VPRModel.from_pretrained(REPO, token=False)
    assert torch.equal(outputs(registry.VPRModel.from_pretrained(REPO, token=TOKEN), images), outputs(model, images))


def test_a_model_without_a_release_raises_a_clear_error_and_touches_no_network(hub_server):
    with pytest.raises(registry.NotPublishedError, match="released.*train.*pretrained='org/name"):
        registry.create("gem_resnet50", pretrained=True)
    assert hub_server.count() == 0


def test_an_unpinned_published_release_is_refused(tmp_path):
    (tmp_path / "published.json").write_text('{"gem_vgg16.demo": "org/gem"}')
    with pytest.raises(ValueError, match="not pinned.*40-hex"):
        registry.find_releases(tmp_path, "gem_vgg16")


def test_centres_from_a_repo_of_the_reference_tools_load_with_a_warning(hub_server, tmp_path):
    import h5py
    from huggingface_hub import HfApi

    with h5py.File(tmp_path / "centroids.h5", "w") as f:
        f["centroids"], f["descriptors"] = torch.randn(3, 8).double().numpy(), torch.randn(10, 8).double().numpy()
    api = HfApi(token=TOKEN)
    api.create_repo("tester/reference")
    api.upload_file(path_or_fileobj=str(tmp_path / "centroids.h5"), path_in_repo="centroids.h5",
                    repo_id="tester/reference")
    with pytest.warns(UserWarning, match="without a sha256 check"):
        centroids, descriptors = hub.pull_centroids("tester/reference")
    assert centroids.shape == (3, 8) and descriptors.shape == (10, 8)


def test_push_to_a_bare_name_lands_in_the_users_namespace(hub_server, tiny):
    model, images = tiny
    commit = model.push_to_hub("bare", token=TOKEN)
    assert hub_server.repos["tester/bare"].branches["main"] == commit
    assert torch.equal(outputs(registry.VPRModel.from_pretrained("tester/bare"), images), outputs(model, images))


def test_two_different_revisions_for_one_source_are_refused():
    with pytest.raises(ValueError, match="give one"):
        registry.VPRModel.from_pretrained("tester/tiny@v1", revision="v2")


def test_registry_create_takes_force_download(hub_server, tiny, tiny_model_name):
    model, images = tiny
    _push(model)
    registry.create(tiny_model_name, pretrained=REPO)
    loaded = registry.create(tiny_model_name, pretrained=REPO, force_download=True)
    assert torch.equal(outputs(loaded, images), outputs(model, images))
    assert _gets(hub_server, "model.safetensors") == 2 and _gets(hub_server, "config.json") == 2
