"""Hub errors that say what went wrong and what to do about it."""
from __future__ import annotations

from ..errors import NotPublishedError


class HubError(RuntimeError):
    """Base class: a Hub operation failed for a reason the user can fix."""


class HubOfflineError(HubError, ConnectionError):
    """The Hub could not be reached (or offline mode is on) and the files are not in the local cache."""


class RepoNotFoundError(HubError, LookupError):
    """The repository does not exist, or it is private and no valid token was sent."""


class RevisionNotFoundError(HubError, LookupError):
    """The branch, tag or commit does not exist in the repository."""


class FileNotInRepoError(HubError, LookupError):
    """A file the layout needs is not in the repository (or directory) at that revision."""


class NotLoggedInError(HubError, PermissionError):
    """Pushing needs a token with write access and none was found, or the Hub rejected it."""


class CorruptedFileError(HubError):
    """A file's sha256 differs from the one config.json records: a corrupted or mismatched file, never used.

    The sha256 list travels beside the files, so it detects damage in transfer or on disk and files that do not
    belong to that config.json; it cannot tell a deliberate change (whoever can change a file can change the list).
    """




class WrongModelError(HubError, ValueError):
    """config.json describes another model than the one asked for, or is not a model-zoo config at all."""


class IncompatibleWeightsError(HubError, ValueError):
    """model.safetensors does not match the architecture built from config.json (strict loading)."""


__all__ = [
    "CorruptedFileError",
    "FileNotInRepoError",
    "HubError",
    "HubOfflineError",
    "IncompatibleWeightsError",
    "NotLoggedInError",
    "NotPublishedError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "WrongModelError",
]
