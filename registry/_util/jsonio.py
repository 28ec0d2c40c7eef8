"""Bounded JSON reading for the files the zoo loads (config.json, runtime metadata, safetensors headers; ready for
places.json): the text is refused before parsing when it is too large, nested too deeply or holds a number too long
to be one the zoo wrote, so a small crafted file can neither exhaust memory nor raise a bare RecursionError or
ValueError. Every refusal is a `BoundedJSONError` naming the file, the problem and the fix (or the caller's own
error class, a subclass of ValueError). Values quoted in messages are cut to `QUOTE_CHARS` characters (`quote`)."""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any, Dict, Optional, Type, Union

PathLike = Union[str, os.PathLike]
MAX_BYTES = 1 << 20  # config.json and places.json are a few KB; runtime metadata a few KB
MAX_DEPTH = 32  # the zoo's files nest 4 levels at most
MAX_NUMBER_CHARS = 40  # a float64 written by json.dumps has at most 24 characters
QUOTE_CHARS = 80
# a JSON string, unrolled (one repetition per escape, not per character), so a long string costs no memory beyond
# its text in the regex engine
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


class BoundedJSONError(ValueError):
    """A JSON file (or JSON text inside a file) is not valid, or is larger, deeper or holds longer numbers than the
    zoo's files can: it was damaged or crafted."""


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """repr(value) cut to `limit` characters, with how long it was, for error messages about untrusted values."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def _depth(text: str) -> int:
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_bounded(text: Union[str, bytes], what: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                  max_number_chars: int = MAX_NUMBER_CHARS, fix: str = "restore or re-create the file",
                  error: Type[ValueError] = BoundedJSONError) -> Any:
    """JSON `text` parsed within the limits, or `error` naming `what` (e.g. "config.json of DIR"), the problem and
    `fix`."""
    size = len(text)
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes, more than the {max_bytes:,} a file of this kind can be: it is not one "
                    f"the zoo wrote; {fix}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise error(f"{what} is not UTF-8 text ({err}); {fix}") from None

    def number(kind):
        def parse(token: str):
            if len(token) > max_number_chars:
                raise error(f"{what} holds a number of {len(token)} characters ({token[:20]}...), more than the "
                            f"{max_number_chars} a number the zoo writes has; {fix}")
            return kind(token)
        return parse

    deepest = _depth(text)
    if deepest > max_depth:
        raise error(f"{what} nests {deepest} levels of lists and objects, more than the {max_depth} a file of this "
                    f"kind can; {fix}")
    try:
        return json.loads(text, parse_int=number(int), parse_float=number(float))
    except json.JSONDecodeError as err:
        raise error(f"{what} is not valid JSON ({err}); {fix}") from None
    except RecursionError:  # _depth counts brackets outside strings: only a malformed text can get here
        raise error(f"{what} nests lists and objects too deeply to parse; {fix}") from None


def read_json(path: PathLike, what: Optional[str] = None, **limits: Any) -> Any:
    """The JSON file at `path` parsed within the limits of `loads_bounded` (keywords as there); its size is checked
    before it is read. `what` names it in errors (default: the path)."""
    path = Path(path)
    what = what or str(path)
    max_bytes = int(limits.get("max_bytes", MAX_BYTES))
    error = limits.get("error", BoundedJSONError)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes, more than the {max_bytes:,} a file of this kind can be: it is not one "
                    f"the zoo wrote; {limits.get('fix', 'restore or re-create the file')}")
    return loads_bounded(path.read_bytes(), what, **limits)


SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
SAFETENSORS_MAX_HEADER = 100 << 20  # safetensors' own bound on its header


def check_safetensors_header(path: PathLike, error: Type[ValueError] = BoundedJSONError) -> Dict[str, Any]:
    """The JSON header of a .safetensors file, checked before any tensor is read: its length within the file and
    safetensors' bound, valid bounded JSON, and every tensor a known dtype with a shape and data offsets that fit the
    file and its byte count. `error` (naming the file, the problem and the fix) for anything else."""
    path = Path(path)
    fix = "the file is damaged or was not written by safetensors: download it again or restore a good copy"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise error(f"{path} is {size} bytes, too short for a safetensors header; {fix}")
        (length,) = struct.unpack("<Q", head)
        if length > min(SAFETENSORS_MAX_HEADER, size - 8):
            raise error(f"{path} declares a safetensors header of {length:,} bytes in a file of {size:,}; {fix}")
        header = loads_bounded(fh.read(length), f"the safetensors header of {path}", max_bytes=SAFETENSORS_MAX_HEADER,
                               max_depth=4, fix=fix, error=error)
    if not isinstance(header, dict):
        raise error(f"the safetensors header of {path} is not a JSON object; {fix}")
    check_safetensors_entries(header, size - 8 - length, str(path), fix, error)
    return header


def check_safetensors_entries(header: Dict[str, Any], data: int, what: str, fix: str,
                              error: Type[ValueError] = BoundedJSONError) -> None:
    """Every tensor of a parsed safetensors `header` a known dtype with a shape and data offsets that fit a data
    section of `data` bytes and its byte count; `error` naming `what` (the file), the tensor and `fix` otherwise."""
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(entry, dict) and entry.get("dtype") in SAFETENSORS_DTYPES
              and isinstance(entry.get("shape"), list) and isinstance(entry.get("data_offsets"), list)
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                      for v in entry["shape"] + entry["data_offsets"]) and len(entry["data_offsets"]) == 2)
        if not ok:
            raise error(f"the safetensors header of {what} describes tensor {quote(name)} as {quote(entry)}, not a "
                        f"dtype, shape and data offsets; {fix}")
        begin, end = entry["data_offsets"]
        count = 1
        for dim in entry["shape"]:
            count *= dim
        if not begin <= end <= data or end - begin != count * SAFETENSORS_DTYPES[entry["dtype"]]:
            raise error(f"the safetensors header of {what} gives tensor {quote(name)} (shape {entry['shape']}, "
                        f"{entry['dtype']}) the bytes {begin}..{end} of a {data:,}-byte data section; {fix}")
    _check_tiling(header, data, what, fix, error)


def _check_tiling(header: Dict[str, Any], data: int, what: str, fix: str, error: Type[ValueError]) -> None:
    """The tensors' byte ranges cover the data section end to end, in order, with no gap or overlap (as safetensors
    requires: it refuses anything else with its own error)."""
    end = 0
    spans = sorted((e["data_offsets"][0], e["data_offsets"][1], n) for n, e in header.items() if n != "__metadata__")
    for begin, stop, name in spans:
        if begin != end:
            raise error(f"the safetensors header of {what} starts tensor {quote(name)} at byte {begin} of its data "
                        f"section, where the tensors before it end at {end} (a gap or an overlap); {fix}")
        end = stop
    if end != data:
        raise error(f"the safetensors header of {what} describes {end:,} bytes of tensors in a {data:,}-byte data "
                    f"section; {fix}")
