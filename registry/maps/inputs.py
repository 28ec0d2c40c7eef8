"""What `vpr map build` / `add` read besides the images: the image list (a folder, or a text file of paths), place
ids (from the file names, or a CSV) and coordinates (a CSV, or the images' EXIF GPS tags).

Place ids from names (`from-name`): an image in a subfolder of the images folder (the folder given, or for a list
the deepest folder holding every listed image) belongs to the place its folder names (`site/kitchen/001.jpg` ->
`kitchen`); an image directly in the images folder to the place its file name starts with, up to the first `_`
(`0042_b.jpg` -> `0042`; `hall.jpg` -> `hall`). Ids are typed as every build and add types them (`typed_ids`):
integers when every id of the map is one (`42`, ` 7 `, `-3`; in the signed 64-bit range), else strings; a map of
integer ids takes only integer ids.

CSV files (`csv:FILE`) have a header row with an `image` column (the file's path relative to the images folder,
its absolute path, or its bare file name where that is unique) and `place`, or `lat` and `lon`, or `utm_east` and
`utm_north`; one row for every image (a repeated row is taken once; two rows that differ for one image are refused).
"""
from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..datasets.base import IMAGE_SUFFIXES
from ..datasets.base import list_images as _folder_images
from .manifest import MapError

MAX_LIST_BYTES = 1 << 30  # an image list or CSV of some million lines
COORD_COLUMNS = (("lat", "lon"), ("utm_east", "utm_north"))
_INT_TEXT = re.compile(r"-?[0-9]{1,19}")  # integer text of a place id (after stripping): 19 digits at most
INT_ID_RANGE = (-(2**63), 2**63 - 1)  # an integer place id is a signed 64-bit integer (numpy's, Arrow's, faiss')
_GPS_IFD, _LAT_REF, _LAT, _LON_REF, _LON = 0x8825, 1, 2, 3, 4


def list_images(source: str) -> Tuple[List[str], Path]:
    """(image paths, the images folder) of a folder (its image files, recursively, in the datasets' natural order of
    their relative paths, img2 before img10; the folder itself) or of a text file listing one path a line (relative
    to the file's folder; blank lines and `#` comments skipped; the images folder is the deepest folder holding every
    listed image)."""
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            files = _folder_images(path, "--images", recursive=True)
        except FileNotFoundError:
            raise MapError(f"--images {source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in that folder") from None
        return [str(p) for p in files], path
    if not path.is_file():
        raise MapError(f"--images {source}: no such folder or file; pass a folder of images or a text file listing "
                       "one image path a line")
    lines = _read_text(path).splitlines()
    files = [str(path.parent / line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    missing = [f for f in files if not Path(f).is_file()]
    if not files or missing:
        problem = f"lists {missing[0]}, which does not exist" if missing else "lists no image"
        raise MapError(f"--images {source} {problem}: list one image path a line (relative to the list's folder)")
    return files, Path(os.path.commonpath([os.path.abspath(Path(f).parent) for f in files]))


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_LIST_BYTES:
        raise MapError(f"{path} is larger than {MAX_LIST_BYTES:,} bytes: not an image list or CSV of this command")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise MapError(f"{path} is not UTF-8 text ({err}): save it as UTF-8") from None


class PlaceIdError(MapError):
    """A place id that `typed_ids` refuses; `index` is its position among the ids it was given."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def _in_id_range(n: int) -> bool:
    return INT_ID_RANGE[0] <= n <= INT_ID_RANGE[1]


def typed_ids(ids: Sequence[Any], as_int: Optional[bool] = None) -> List[Any]:
    """Place ids typed by the one rule of every build and add (the command line's names and CSV cells too): an
    integer (a Python or numpy int, or integer text such as '7', ' 7 ' or '-3', in the signed 64-bit range) is an
    integer id; anything else is its text with surrounding whitespace removed. `as_int` True (a map of integer
    ids): ints, MapError for any other id; False: strings; None: ints when every id is an integer, else strings.
    PlaceIdError (a MapError naming the id's position) for an id that is neither an integer nor a string (bools and
    floats included), and for an int outside the 64-bit range."""
    texts = []
    for i, p in enumerate(ids):
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (str, int, np.integer)):
            raise PlaceIdError(f"place ids are integers or strings, got {repr(p)[:40]} ({type(p).__name__}): pass "
                               "int(...) or str(...) of it", i)
        if not isinstance(p, str) and not _in_id_range(int(p)):
            raise PlaceIdError(f"place id {repr(p)[:40]} is outside the signed 64-bit range an integer place id must "
                               "be in: give it as a string, or a smaller integer", i)
        texts.append(p if not isinstance(p, str) else p.strip())
    ints = [not isinstance(t, str) or _int_text(t) for t in texts]
    if as_int is None:
        as_int = bool(texts) and all(ints)
    if not as_int:
        return [str(t) for t in texts]
    wrong = next((i for i, ok in enumerate(ints) if not ok), None)
    if wrong is not None:
        raise PlaceIdError(f"this map's place ids are integers; {repr(ids[wrong])[:40]} is not one (a whole number in "
                           "the signed 64-bit range): give integer place ids (or build a new map for other ids)", wrong)
    return [int(t) for t in texts]


def _int_text(text: str) -> bool:
    return _INT_TEXT.fullmatch(text) is not None and _in_id_range(int(text))


def places_from_names(images: Sequence[str], root: Path, as_int: Optional[bool] = None) -> List[Any]:
    """The `from-name` rule of the module docstring."""
    names = []
    for image in images:
        p = Path(image)
        inside = Path(os.path.abspath(p.parent)) != Path(os.path.abspath(root))
        names.append(p.parent.name if inside else p.stem.split("_", 1)[0] or p.stem)
    return typed_ids(names, as_int)


def _csv_rows(path: Path, columns: Sequence[str]) -> List[Dict[str, str]]:
    reader = csv.DictReader(_read_text(path).splitlines())
    try:
        rows = list(reader)
    except csv.Error as err:  # a field over csv.field_size_limit(); csv counts the lines it has read before this one
        raise MapError(f"{path}, line {reader.line_num + 1}: not a CSV line this command reads ({err}): write one "
                       "short line per image (image,place or image,lat,lon)") from None
    header = set(rows[0]) if rows else set()
    missing = [c for c in ("image", *columns) if c not in header]
    if missing:
        raise MapError(f"{path} lacks the column(s) {', '.join(missing)}: its header row must name image and "
                       f"{', '.join(columns)}")
    return rows


def _match_rows(images: Sequence[str], root: Path, path: Path, rows: List[Dict[str, str]]) -> List[Dict[str, str]]:
    """The CSV row of each image, by its path relative to `root`, its absolute path or its unique file name."""
    by_key: Dict[str, Dict[str, str]] = {}
    names: Dict[str, List[Dict[str, str]]] = {}
    for row in rows:
        key = (row.get("image") or "").strip()
        other = by_key.get(Path(key).as_posix())
        if other is not None and other != row:
            raise MapError(f"{path} has two rows for the image {key[:200]!r} that differ ({_shown(other)} and "
                           f"{_shown(row)}): keep one row per image")
        by_key[Path(key).as_posix()] = row
        names.setdefault(Path(key).name, []).append(row)
    out = []
    for image in images:
        rel = Path(os.path.relpath(image, root)).as_posix()
        row = by_key.get(rel) or by_key.get(Path(os.path.abspath(image)).as_posix())
        if row is None and len(names.get(Path(image).name, [])) == 1:
            row = names[Path(image).name][0]
        if row is None:
            raise MapError(f"{path} has no row for the image {rel}: give one row per image (image column: the path "
                           "relative to the images folder, or the file name)")
        out.append(row)
    return out


def _shown(row: Dict[str, Any]) -> str:
    return ",".join(str(v) for v in row.values())[:100]


def places_from_csv(images: Sequence[str], root: Path, csv_file: str, as_int: Optional[bool] = None) -> List[Any]:
    path = Path(csv_file)
    if not path.is_file():
        raise MapError(f"--places csv:{csv_file}: no such file")
    rows = _match_rows(images, root, path, _csv_rows(path, ("place",)))
    cells = [r["place"] or "" for r in rows]
    try:
        return typed_ids(cells, as_int)
    except PlaceIdError as err:  # the file and the row named, besides the id
        row = rows[err.index]
        raise MapError(f"{path}, the row of {str(row.get('image')).strip()[:200]}: {err}") from None


def coords_from_csv(images: Sequence[str], root: Path, csv_file: str) -> np.ndarray:
    """(N, 2) float64: (lat, lon) or (utm_east, utm_north) per image, whichever pair the CSV has."""
    path = Path(csv_file)
    if not path.is_file():
        raise MapError(f"--coords csv:{csv_file}: no such file")
    header = next(csv.reader(_read_text(path).splitlines()), [])
    pair = next((p for p in COORD_COLUMNS if set(p) <= set(header)), None)
    if pair is None:
        raise MapError(f"{path} has neither lat,lon nor utm_east,utm_north columns (header: {','.join(header)[:200]})")
    rows = _match_rows(images, root, path, _csv_rows(path, pair))
    out = np.empty((len(rows), 2), dtype=np.float64)
    for i, row in enumerate(rows):
        try:
            out[i] = [float(row[pair[0]]), float(row[pair[1]])]
        except (TypeError, ValueError):
            out[i] = np.nan
        if not np.isfinite(out[i]).all():
            raise MapError(f"{path}: the row of {row['image']} has {pair[0]}={row[pair[0]]!r}, {pair[1]}="
                           f"{row[pair[1]]!r}: write two finite numbers")
    return out


def _degrees(value: Any, ref: Any, negative: str) -> float:
    d, m, s = (float(v) for v in value)
    out = d + m / 60.0 + s / 3600.0
    return -out if str(ref).strip().upper() == negative else out


def coords_from_exif(images: Sequence[str]) -> np.ndarray:
    """(N, 2) float64 (lat, lon) from each image's EXIF GPS tags (degrees, minutes, seconds; S and W negative)."""
    from PIL import Image

    out = np.empty((len(images), 2), dtype=np.float64)
    for i, image in enumerate(images):
        try:
            with Image.open(image) as img:
                gps = img.getexif().get_ifd(_GPS_IFD)
            out[i] = [_degrees(gps[_LAT], gps.get(_LAT_REF, "N"), "S"),
                      _degrees(gps[_LON], gps.get(_LON_REF, "E"), "W")]
        except (KeyError, TypeError, ValueError, ZeroDivisionError, OSError):
            out[i] = np.nan
        if not all(math.isfinite(v) for v in out[i]):
            raise MapError(f"{image} has no readable EXIF GPS position (GPSLatitude / GPSLongitude): give --coords "
                           "csv:FILE instead")
    return out
