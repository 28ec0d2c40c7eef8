"""Where a layout lives (a local folder or a Hub repo at one commit) and verified access to its files."""
from __future__ import annotations

import logging
import os
import re
import socket
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from .._util.files import sha256_file
from .._util.jsonio import read_json
from ._layout import CONFIG, FORMAT_VERSION
from .errors import (
    CorruptedFileError,
    FileNotInRepoError,
    HubError,
    HubOfflineError,
    RepoNotFoundError,
    RevisionNotFoundError,
    WrongModelError,
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_log = logging.getLogger(__name__)

ModelLocation = Union[str, os.PathLike]  # a folder in the layout, or a Hub repository id `org/name[@rev]`
# the keyword arguments of Snapshot (and so of every load from the Hub): which version, which cache, which login
HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "endpoint", "force_download")


def parse_source(
    src: ModelLocation, revision: Optional[str] = None
) -> Tuple[Optional[Path], Optional[str], Optional[str]]:
    """(directory, repo_id, revision) for a local folder, `org/name` or `org/name@rev`."""
    if isinstance(src, os.PathLike) or Path(str(src)).expanduser().is_dir():
        path = Path(src).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory: pass a folder written by save_pretrained")
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repositories, not to the local folder {path}")
        return path, None, None
    text = str(src)
    repo_id, _, pinned = text.partition("@")
    if not _REPO_ID.match(repo_id) or text.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"{text!r} is neither an existing directory nor a Hub repository id: pass a folder written by "
            "save_pretrained, or 'org/name', 'org/name@<commit or tag>'"
        )
    owner = Path(repo_id.split("/")[0]).expanduser()
    if owner.is_dir():  # `models/gem_typo` beside a `models/` folder is a mistyped path, not a Hub repository
        raise FileNotFoundError(
            f"{text!r} is not an existing directory ({owner}/ exists here but has no {repo_id.split('/')[1]!r}), so "
            f"it is not taken for a Hub repository id: check the folder name; for the Hub repository, run from a "
            f"folder without a {owner.name}/ sub-folder"
        )
    if pinned and revision is not None and pinned != revision:
        raise ValueError(f"{text!r} pins revision {pinned!r} but revision={revision!r} was passed too: give one")
    return None, repo_id, pinned or revision


class Snapshot:
    """A model-zoo layout at one place and version; `path(name)` returns a file checked against config.json."""

    def __init__(
        self,
        src: ModelLocation,
        *,
        revision: Optional[str] = None,
        cache_dir: Optional[ModelLocation] = None,
        local_files_only: bool = False,
        token: Optional[Union[str, bool]] = None,
        endpoint: Optional[str] = None,
        force_download: bool = False,
    ) -> None:
        self.directory, self.repo_id, self.revision = parse_source(src, revision)
        self.cache_dir, self.local_files_only = cache_dir, local_files_only
        self.token, self.endpoint, self.force_download = token, endpoint, force_download
        self.commit: Optional[str] = None
        self._config: Optional[Dict[str, Any]] = None
        self._config_missing = False

    @property
    def label(self) -> str:
        """Human-readable location: the folder, or org/name@revision."""
        if self.directory is not None:
            return str(self.directory)
        return f"{self.repo_id}@{self.commit or self.revision or 'main'}"

    def config(self, required: bool = True) -> Optional[Dict[str, Any]]:
        """config.json as a dict; None if absent and not `required` (a layout from other tools)."""
        if self._config is None and not self._config_missing:
            try:
                path = self._fetch(CONFIG)
            except FileNotInRepoError:
                if required:
                    raise
                self._config_missing = True
                return None
            cached = (f"; if the cached copy is damaged, check it with `hf cache verify {self.repo_id}` and load "
                      "again with force_download=True") if self.directory is None else ""
            self._config = read_json(path, f"config.json of {self.label}", error=WrongModelError,
                                     fix="it was not written by save_pretrained / push_to_hub of this model "
                                     f"zoo{cached}")
        if self._config is None and required:
            raise FileNotInRepoError(f"{self.label} has no config.json: it is not a model-zoo layout")
        return self._config

    def zoo_config(self) -> Dict[str, Any]:
        """config.json, checked to be one this model zoo wrote."""
        config = self.config(required=True)
        if not isinstance(config, dict) or "architecture" not in config or not isinstance(config.get("files"), dict):
            raise WrongModelError(
                f"config.json of {self.label} is not a model-zoo config (it lacks 'architecture' or the 'files' "
                "checksums): it belongs to another library; load it with that library, or re-export the model "
                "with VPRModel.save_pretrained / push_to_hub"
            )
        unchecked = sorted(name for name, entry in config["files"].items()
                           if not isinstance(entry, dict) or not _SHA256.match(str(entry.get("sha256", ""))))
        if unchecked:
            raise WrongModelError(
                f"config.json of {self.label} lists {', '.join(unchecked)} without a sha256 (64 hex digits), so "
                "they cannot be checked: re-save the model with save_pretrained (or push_to_hub), which records one "
                "for every file"
            )
        version = config.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise WrongModelError(
                f"config.json of {self.label}: format_version = {version!r} is not a layout format version (a "
                f"whole number >= 1; this version of the zoo writes {FORMAT_VERSION}): the file was changed or "
                "damaged; restore it, or re-save the model with save_pretrained"
            )
        if version > FORMAT_VERSION:
            raise WrongModelError(f"{self.label} uses layout format {version}, newer than this version of the zoo "
                                  f"understands ({FORMAT_VERSION}): upgrade clusvpr-zoo")
        return config

    def path(self, name: str) -> Path:
        """Local path of `name`, its sha256 checked against config.json (what huggingface_hub does not do: it
        trusts a cached file). A cached copy that does not match is downloaded again once (`force_download=True`);
        a mismatch that persists is a CorruptedFileError, and the bad copy is deleted with huggingface_hub's cache
        API (a user's own folder is never changed)."""
        config = self.config(required=False)
        files = config.get("files") if isinstance(config, dict) else None
        if isinstance(files, dict) and name not in files:
            raise FileNotInRepoError(f"{self.label} has no {name} (config.json lists {sorted(files)}): "
                                     + _missing_hint(name))
        path = self._fetch(name)
        if not isinstance(files, dict):
            warnings.warn(f"{self.label} has no model-zoo config.json: {name} is loaded without a sha256 check",
                          stacklevel=3)
            return path
        entry = files[name]
        expected = str(entry.get("sha256", "")) if isinstance(entry, dict) else ""
        if not _SHA256.match(expected):
            raise WrongModelError(f"config.json of {self.label} lists {name} without a sha256 (64 hex digits), so it "
                                  "cannot be checked: re-save the model with save_pretrained (or push_to_hub)")
        digest = sha256_file(path)
        problem = (f"{name} of {self.label} has sha256 {{digest}}, but config.json records {expected}: a corrupted or "
                   "mismatched file (damaged in transfer or on disk, or not the file that config.json was saved with)")
        if digest != expected and self._can_fetch_again():
            path = self._fetch_again(name, problem.format(digest=digest))
            digest = sha256_file(path)
        if digest != expected:
            raise CorruptedFileError(
                f"{problem.format(digest=digest)}. {self._give_up(path)} Do not use this file; if the mismatch "
                "persists, tell the repository owner."
            )
        return path

    def _can_fetch_again(self) -> bool:
        """Whether a cached copy that fails its check can be downloaded again: not for a local folder (never
        changed), not offline (nothing to download it from), not when it was just downloaded (force_download)."""
        return self.directory is None and not self.force_download and not self._offline()

    def _fetch_again(self, name: str, problem: str) -> Path:
        """`name` downloaded again with `force_download=True`, replacing the cached copy that had `problem`."""
        _log.warning("%s; downloading it again", problem)
        try:
            return self._fetch(name, force=True)
        except HubError as err:
            raise CorruptedFileError(f"{problem}, and downloading it again failed: {err}") from err

    def _offline(self) -> bool:
        from huggingface_hub import constants

        return self.local_files_only or _offline_mode(constants)

    def _give_up(self, path: Path) -> str:
        """For a file that failed its check for good: delete the cached copy through huggingface_hub's cache API (a
        re-download with force_download does not replace it, as measured with the real huggingface_hub client), and
        say what happened, for the error message. A local folder is left as it is."""
        if self.directory is not None:
            return "The folder was left as it is."
        if self._offline():
            why = ("It could not be downloaded again: offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True); "
                   "load it while online to download it again.")
        elif self.force_download:
            why = ("It was just downloaded (force_download=True), so the repository serves a file that config.json "
                   "was not saved with.")
        else:
            why = ("It was downloaded again and still does not match, so the repository serves a file that "
                   "config.json was not saved with.")
        return f"{why} {_delete_from_cache(self, Path(path))}"

    def _fetch(self, name: str, force: bool = False) -> Path:
        if self.directory is not None:
            path = self.directory / name
            if not path.is_file():
                raise FileNotInRepoError(f"{self.directory} has no {name}: " + _missing_hint(name))
            return path
        path = Path(_download(self, name, force=force or self.force_download))
        # later files come from the very commit config.json was read from, even if the branch moves meanwhile
        if self.commit is None and path.parent.parent.name == "snapshots" and _COMMIT.match(path.parent.name):
            self.commit = path.parent.name
        return path


def _missing_hint(name: str) -> str:
    if name == CONFIG:
        return "the folder or repository must hold the layout written by save_pretrained / push_to_hub"
    if name == "centroids.h5":
        return ("the model was saved without cluster centres (its aggregator has no clusters, or was never "
                "initialised with init_from_clusters)")
    if name == "pca.h5":
        return "the model was saved without a fitted whitening (fit it with model.fit_whitening first)"
    return "save or push the model again to write the full layout"


def _delete_from_cache(snap: Snapshot, path: Path) -> str:
    """Delete one cached file of `snap` with huggingface_hub's cache management (`HFCacheInfo.delete_files`: the
    snapshot entry, and its blob unless another cached file shares it); the sentence saying so."""
    from huggingface_hub import constants, scan_cache_dir

    commit, name = path.parent.name, path.name
    try:
        cache = scan_cache_dir(snap.cache_dir or constants.HF_HUB_CACHE)  # the cache hf_hub_download used
        files = [f for repo in cache.repos if repo.repo_type == "model" and repo.repo_id == snap.repo_id
                 for revision in repo.revisions if revision.commit_hash == commit
                 for f in revision.files if f.file_name == name]
        if not files:
            return "It is not listed in the Hugging Face cache, so nothing was deleted there."
        cache.delete_files(*files).execute()
    except Exception as err:  # noqa: BLE001  (the error being raised matters more; say how to delete it by hand)
        return f"Deleting it from the Hugging Face cache failed ({err}): delete it with `hf cache rm`."
    return "The bad copy was deleted from the Hugging Face cache."


def _download(snap: Snapshot, name: str, force: bool = False) -> str:
    """hf_hub_download of one file at the snapshot's commit (or revision), errors turned into HubErrors;
    `force` downloads it again even when cached."""
    from huggingface_hub import constants, hf_hub_download

    revision = snap.commit or snap.revision
    try:
        return hf_hub_download(
            snap.repo_id, name, revision=revision, cache_dir=snap.cache_dir, local_files_only=snap.local_files_only,
            token=snap.token, endpoint=snap.endpoint, library_name="clusvpr-zoo", force_download=force,
        )
    except Exception as err:  # noqa: BLE001  (translated below, or re-raised unchanged)
        endpoint = snap.endpoint or constants.ENDPOINT
        translated = _translate(err, snap, name, revision or "main", endpoint, force)
        if translated is None:
            raise
        raise translated from err


def _translate(err: Exception, snap: Snapshot, name: str, revision: str, endpoint: str,
               force: bool = False) -> Optional[HubError]:
    """The HubError for a huggingface_hub / network exception, or None to re-raise it as it is."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    remote_missing = getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)
    where = f"{snap.repo_id}@{revision}"
    if isinstance(err, hf.RevisionNotFoundError):
        return RevisionNotFoundError(
            f"revision {revision!r} does not exist in {snap.repo_id} on {endpoint}: pass a branch, tag or full "
            f"commit hash that exists (HfApi().list_repo_refs({snap.repo_id!r}) lists them)"
        )
    if isinstance(err, hf.RepositoryNotFoundError):
        return RepoNotFoundError(
            f"repository {snap.repo_id} was not found on {endpoint}: check the id (org/name); if it is private, "
            "log in with `hf auth login` (or `huggingface-cli login`) or pass token=...; to load from disk, pass "
            "the path of a folder written by save_pretrained instead"
        )
    if transport_failure(err):
        offline = snap._offline()
        cause = ("offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline
                 else f"the Hub at {endpoint} could not be reached (no network?)")
        cache = snap.cache_dir or constants.HF_HUB_CACHE
        if force:
            return HubOfflineError(f"cannot download {name} of {where} afresh (force_download): {cause}")
        return HubOfflineError(
            f"cannot get {name} of {where}: {cause}, and it is not in the cache at {cache}. Load a local folder "
            "instead (from_pretrained('path/to/folder'), written by save_pretrained), or pre-fill the cache while "
            "online (one from_pretrained call, with the same cache_dir) and then set HF_HUB_OFFLINE=1 or pass "
            "local_files_only=True"
        )
    if isinstance(err, remote_missing):
        return FileNotInRepoError(f"{where} has no {name}: " + _missing_hint(name))
    return None


def _offline_mode(constants) -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it: `constants.is_offline_mode()` where it exists (read at each
    call), else the constant read at import (older releases)."""
    probe = getattr(constants, "is_offline_mode", None)
    return bool(probe()) if probe is not None else bool(constants.HF_HUB_OFFLINE)


def transport_failure(err: BaseException) -> bool:
    """Whether `err` says the Hub could not be reached: huggingface_hub's own offline and not-in-the-cache errors
    (what hf_hub_download raises when its request fails and no cached copy exists), or an error caused by the
    socket layer's (refused, reset, timed out, name not resolved), whichever HTTP library huggingface_hub uses."""
    from huggingface_hub import errors as hf

    seen = set()
    cause: Optional[BaseException] = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError)):
            return True
        if isinstance(cause, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
