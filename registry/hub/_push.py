"""Push: write the layout to a temporary folder and upload it in one commit with `HfApi.upload_folder`."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ._layout import LAYOUT_FILES, card_facts, write_layout
from ._source import transport_failure
from .errors import HubError, HubOfflineError, NotLoggedInError


def push_to_hub(
    model: torch.nn.Module,
    repo_id: str,
    *,
    revision: Optional[str] = None,
    branch: Optional[str] = None,
    private: bool = False,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    tag: Optional[str] = None,
    endpoint: Optional[str] = None,
    model_card: Optional[Union[str, os.PathLike]] = None,
    training: Optional[Mapping[str, Any]] = None,
    evaluation: Optional[Mapping[str, Any]] = None,
    recalls: Optional[Mapping[str, Mapping[str, float]]] = None,
    release: Optional[Mapping[str, Any]] = None,
    dtype: Optional[Union[str, torch.dtype]] = None,
) -> str:
    """Upload the layout to `repo_id` (created if missing) on branch `revision` (alias `branch`); returns the commit.

    Layout files of an earlier push that this model lacks (say pca.h5) are deleted in the same commit
    (`upload_folder(delete_patterns=LAYOUT_FILES)`; other files in the repository are left alone); `tag` also
    tags the new commit, so `org/name@<tag>` pulls it. `dtype` stores the weights at another precision.
    """
    from huggingface_hub import HfApi, constants, get_token

    if revision is not None and branch is not None and revision != branch:
        raise ValueError(f"revision={revision!r} and branch={branch!r} name different branches: give one")
    branch = branch or revision
    token = token or get_token()
    endpoint = endpoint or constants.ENDPOINT
    if not token:
        raise NotLoggedInError(
            f"pushing to {repo_id} needs a Hugging Face token with write access and none was found: run "
            "`hf auth login` (or `huggingface-cli login`), set HF_TOKEN, or pass token=...; to keep the model "
            "locally instead, use save_pretrained('path/to/folder')"
        )
    api = HfApi(endpoint=endpoint, token=token, library_name="clusvpr-zoo")
    facts = card_facts(model, training=training, evaluation=evaluation, recalls=recalls, release=release)
    with tempfile.TemporaryDirectory(prefix="clusvpr-push-") as tmp:
        folder = Path(tmp)
        write_layout(model, folder, facts, model_card, repo_hint=repo_id, dtype=dtype)
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # "name" -> "user/name"
            if branch not in (None, constants.DEFAULT_REVISION):
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=branch,
                                     delete_patterns=list(LAYOUT_FILES),
                                     commit_message=commit_message or f"Upload {model.config['architecture']}")
            if tag:
                api.create_tag(repo_id, tag=tag, revision=info.oid)
        except Exception as err:  # noqa: BLE001  (translated below, or re-raised unchanged)
            translated = _translate_push(err, repo_id, endpoint)
            if translated is None:
                raise
            raise translated from err
    return info.oid


def _translate_push(err: Exception, repo_id: str, endpoint: str) -> Optional[HubError]:
    """The HubError for a failed push, or None to re-raise the original."""
    from huggingface_hub import errors as hf

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, hf.HfHubHTTPError) and status == 401:
        return NotLoggedInError(
            f"the Hub at {endpoint} rejected the token while pushing to {repo_id} (401 Unauthorized): log in again "
            "with `hf auth login` (or `huggingface-cli login`) or pass a valid token=... with write access"
        )
    if isinstance(err, hf.HfHubHTTPError) and status == 403:
        return NotLoggedInError(
            f"the token has no write access to {repo_id} on {endpoint} (403 Forbidden): use a token with write "
            f"access to the {repo_id.split('/')[0]!r} namespace, or push to a repository of your own"
        )
    if transport_failure(err):
        return HubOfflineError(
            f"cannot push to {repo_id}: the Hub at {endpoint} could not be reached (no network, or HF_HUB_OFFLINE=1 "
            "is set); keep the model with save_pretrained('path/to/folder') and push it when online"
        )
    return None
