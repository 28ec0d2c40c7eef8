"""What the service accepts from a client, and the errors it answers otherwise: the request size cap, 1..16 image
files per request, each opened once and decoded the bounded way of registry.datasets.images (the pixel budget read
from the header before any pixel is decoded, 8-bit RGB from any bit depth), and k in its range. `BadRequest`
carries the HTTP status and a message naming the problem and the fix."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional

from PIL import Image, UnidentifiedImageError

from .._util.image_modes import to_rgb
from .._util.jsonio import loads_bounded
from ..datasets.images import max_pixels
from ..maps.core import MAX_K

MAX_FILES = 16
DEFAULT_MAX_BODY = 32 * 2**20  # bytes of one request
DEFAULT_MAX_PIXELS = 16_000_000  # per image: a 16 MP photo; the library's budget (VPR_MAX_IMAGE_PIXELS) caps it
_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}


class BadRequest(ValueError):
    """A client error: `status` (400, 404, 413, 422, ...) and the message to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """The service's input limits: bytes per request, files per request, pixels per image."""

    max_body: int = DEFAULT_MAX_BODY
    max_files: int = MAX_FILES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not isinstance(self.max_body, int) or self.max_body < 1024:
            raise ValueError(f"the request size cap must be a whole number >= 1024 bytes, got {self.max_body!r}")
        if not isinstance(self.max_files, int) or not 1 <= self.max_files <= MAX_FILES:
            raise ValueError(f"files per request must be 1..{MAX_FILES}, got {self.max_files!r}")
        budget = max_pixels()
        if not isinstance(self.max_pixels, int) or not 1 <= self.max_pixels <= budget:
            raise ValueError(f"the pixel budget per image must be 1..{budget:,} (the library's, "
                             f"VPR_MAX_IMAGE_PIXELS), got {self.max_pixels!r}")


@dataclass
class Upload:
    """One decoded image file of a request: its client file name (for the answer only, never a path), the RGB
    image, the original bytes and the file type's suffix."""

    name: str
    image: Image.Image
    data: bytes
    suffix: str


def check_file_count(count: int, limits: Limits, field: str = "images") -> None:
    if count < 1:
        raise BadRequest(400, f"no image files: send 1 to {limits.max_files} files as multipart/form-data field "
                              f"'{field}'")
    if count > limits.max_files:
        raise BadRequest(400, f"{count} files in one request, at most {limits.max_files} are taken: split them "
                              "over several requests")


def client_name(filename: Optional[str], index: int) -> str:
    """A client's file name for messages and answers: its last path part, printable, at most 120 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:120]
    return name or f"file {index + 1}"


def decode_upload(data: bytes, name: str, limits: Limits) -> Upload:
    """The decoded image, or BadRequest: 413 for more pixels than the budget (read from the header, before any
    pixel is decoded: a decompression bomb costs nothing), 400 for anything that is not a complete image. The
    header is parsed once: the image it opened is the one decoded (to 8-bit RGB as registry.datasets.images
    decodes files)."""
    if not data:
        raise BadRequest(400, f"{name}: the file is empty; send a JPEG, PNG or WebP image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            (width, height), suffix = img.size, _FORMATS.get(img.format or "", ".img")
            if width * height > limits.max_pixels:
                raise BadRequest(413, f"{name}: {width}x{height} = {width * height:,} pixels, more than this server's "
                                      f"pixel budget of {limits.max_pixels:,} per image (--max-pixels); send a "
                                      "smaller image")
            image = _decoded(img, name)
    except BadRequest:
        raise
    except Image.DecompressionBombError as err:
        raise BadRequest(413, f"{name}: too many pixels ({err}); this server's pixel budget is "
                              f"{limits.max_pixels:,} per image (--max-pixels)") from None
    except UnidentifiedImageError:
        raise BadRequest(400, f"{name}: not an image (Pillow knows no image format that starts this way); send a "
                              "JPEG, PNG or WebP file") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise BadRequest(400, f"{name}: a corrupt image header ({err}); send the whole, intact file") from None
    return Upload(name, image, data, suffix)


def _decoded(img: Image.Image, name: str) -> Image.Image:
    """The pixels of an opened image as 8-bit RGB; BadRequest 400 for a truncated or corrupt file."""
    try:
        img.load()
        return to_rgb(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise BadRequest(400, f"{name}: a truncated or corrupt image ({err}); send the whole, intact file") from None


def check_k(k: int, count: int) -> int:
    """k, or BadRequest 422 naming its range (1..min(100, map images))."""
    top = max(1, min(MAX_K, count))
    if not 1 <= k <= top:
        raise BadRequest(422, f"k={k} is out of range: k must be 1..{top} (at most {MAX_K}, and at most the map's "
                              f"{count} images)")
    return k


def parse_flag(value: str, name: str) -> bool:
    if value in ("0", "false", ""):
        return False
    if value in ("1", "true"):
        return True
    raise BadRequest(422, f"{name}={value[:40]!r}: must be 0 or 1")


def parse_places(text: Optional[str], count: int) -> Optional[List]:
    """The optional `places` form field of an add: a JSON list with one place id (int or str) per file."""
    if text is None or text == "":
        return None
    try:  # bounded: a field of 100,000 nested brackets is refused, not a RecursionError (a 500)
        places = loads_bounded(text, "the 'places' field", fix="send a JSON list, one place id per file")
    except ValueError as err:
        raise BadRequest(400, str(err)) from None
    if not isinstance(places, list) or len(places) != count:
        raise BadRequest(400, f"the 'places' field must be a JSON list of {count} place ids (one per file), got "
                              f"{type(places).__name__} of {len(places) if isinstance(places, list) else 1}")
    bad = [p for p in places if isinstance(p, bool) or not isinstance(p, (int, str))]
    if bad:
        raise BadRequest(400, f"place ids must be integers or strings, got {bad[0]!r}")
    return places
