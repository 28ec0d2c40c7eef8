"""Command-line options declared once, on dataclass fields: the field holds the default, its metadata the help text
and how argparse reads it; `add_dataclass_arguments` builds the parser's arguments from them.

    @dataclass
    class Options:
        lr: float = option(1e-4, "learning rate (default {default})", group="optimisation")

gives `--lr` (type float from the annotation, default 1e-4, help "learning rate (default 0.0001)"). `{default}` in
a help text is replaced by the field's default as a user would type it (lists joined by spaces for `nargs`
options, by commas otherwise; None as "none", booleans as on/off), so no default is written twice.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Union

from .ranges import ArgRange


class UsageError(ValueError):
    """An option value a command or a config refuses (the message names the option, the value and the fix): the
    commands print `PROG: error: MESSAGE` and exit with status 2."""


def comma_list(text: str) -> Tuple[str, ...]:
    """argparse type of a comma-separated option (`--models a,b`): its non-empty entries, stripped."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list with at least one entry")
    return values


# metadata keys handed to argparse as they are
_ARGPARSE_KEYS = ("type", "choices", "metavar", "nargs", "action", "const", "required")


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: Union[str, None] = None,
           group: Union[str, None] = None, default_factory: Any = dataclasses.MISSING, **argparse_kwargs: Any):
    """A dataclass field that is also a command-line option: `default` (or `default_factory`) is the option's default,
    `help` its --help text (`{default}` shows the default), `flag` its name (default: `--field-name`; a name without
    dashes is positional), `group` the --help section; other keywords (type, choices, metavar, nargs, action, const,
    required) go to `add_argument`."""
    unknown = sorted(set(argparse_kwargs) - set(_ARGPARSE_KEYS))
    if unknown:
        raise TypeError(f"option() got unknown argparse keywords {unknown}; allowed: {_ARGPARSE_KEYS}")
    if not help:
        raise ValueError("every option needs a help text")
    metadata = {"help": help, "flag": flag, "group": group, **argparse_kwargs}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def is_option(f: dataclasses.Field) -> bool:
    """Whether a dataclass field was declared with `option` (fields without help are not command-line options)."""
    return bool(f.metadata.get("help"))


def option_fields(cls: type) -> Iterator[dataclasses.Field]:
    """The fields of `cls` that are command-line options, in declaration order."""
    return (f for f in dataclasses.fields(cls) if is_option(f))


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field `name` of `cls` (calling its default_factory)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            default = _default_of(f)
            if default is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}.{name} has no default")
            return default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _default_of(f: dataclasses.Field) -> Any:
    """A field's default (calling its default_factory); MISSING when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def show_default(value: Any, nargs: Any = None) -> str:
    """A default as it is typed on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return (" " if nargs is not None else ",").join(show_default(v) for v in value)
    return str(value)


def _scalar_type(hint: Any) -> Any:
    """int, float, str or bool from an annotation, unwrapping Optional[...]; None for anything else."""
    if typing.get_origin(hint) is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    return hint if hint in (int, float, str, bool) else None


def argument_kwargs(f: dataclasses.Field, hint: Any) -> Tuple[List[str], Dict[str, Any]]:
    """(flags, add_argument keywords) of an option field."""
    meta = f.metadata
    default = _default_of(f)
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    kwargs: Dict[str, Any] = {k: meta[k] for k in _ARGPARSE_KEYS if k in meta}
    if "type" not in kwargs and "action" not in kwargs:
        scalar = _scalar_type(hint)
        if scalar is bool:
            if default is not False:
                raise TypeError(f"{f.name}: a bool option defaulting to {default!r} needs an explicit action")
            kwargs["action"] = "store_true"
        elif scalar in (int, float):
            kwargs["type"] = scalar
        elif scalar is None and meta.get("nargs") is None:
            raise TypeError(f"{f.name}: cannot infer an argparse type from {hint!r}; give type= to option()")
    kwargs["help"] = meta["help"].replace("{default}", show_default(default, meta.get("nargs")))
    if flag.startswith("-"):
        kwargs["dest"] = f.name
        kwargs["default"] = None if default is dataclasses.MISSING else default
    elif flag != f.name:
        raise ValueError(f"{f.name}: a positional option is named after its field, got {flag!r}")
    elif default is not dataclasses.MISSING and default is not None:
        kwargs["default"] = default
    return [flag], kwargs


def add_dataclass_arguments(parser: argparse.ArgumentParser, *classes: type,
                            groups: Union[Dict[str, Any], None] = None) -> Dict[str, Any]:
    """Add an argument for every option field of `classes` (in order) to `parser`, each in the argument group its
    `group` names (groups are created on first use, in order; `groups` maps titles to groups made earlier).
    Returns the groups by title."""
    groups = {} if groups is None else groups
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in option_fields(cls):
            title = f.metadata.get("group")
            if title is None:
                target = parser
            else:
                if title not in groups:
                    groups[title] = parser.add_argument_group(title)
                target = groups[title]
            flags, kwargs = argument_kwargs(f, hints.get(f.name))
            target.add_argument(*flags, **kwargs)
    return groups


# ---- options several commands take: each declared once here, with its one check --------------------------------------
def positive_int(text: str) -> int:
    """argparse type of a count: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def device_option(help: str = "auto | cpu | cuda | cuda:N (default {default})", group: Union[str, None] = None):
    """--device: 'auto' (cuda when available, else cpu), cpu, cuda or cuda:N; checked by `resolve_device`."""
    return option("auto", help, group=group)


def data_root_option(help: str, group: Union[str, None] = None):
    """--data-root: the folder holding the known datasets; checked by `check_data_root`."""
    return option(None, help, group=group, metavar="DIR")


def input_size_option(help: str, group: Union[str, None] = None):
    """--input-size H W: two sides >= 1 (argparse); the model's own range is checked by `check_input_size`."""
    return option(None, help, group=group, type=positive_int, nargs=2, metavar=("H", "W"))


def calibration_images_option(default: int, help: str, group: Union[str, None] = None):
    """--calibration-images N: how many calibration images onnx-int8 uses, >= 1 (argparse)."""
    return option(default, help, group=group, type=positive_int, metavar="N")


def resolve_device(text: str) -> str:
    """The device --device names ('auto': cuda when available, else cpu); UsageError for one that does not exist
    here."""
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device: {text!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {text}: only cpu and cuda are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available on this machine; use --device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    return str(dev)


def check_data_root(path: Union[str, None]) -> None:
    """UsageError unless --data-root (when given) is a folder."""
    if path is not None and not Path(path).expanduser().is_dir():
        raise UsageError(f"--data-root: folder not found: {path}")


def check_input_size(size: Union[Tuple[int, int], None], side: ArgRange, of: str) -> None:
    """UsageError unless both sides of --input-size (when given) lie in `side`, the input-size range of the model(s)
    `of` names (registry._util.ranges.ranges_for)."""
    if size is not None and not side.accepts(tuple(size)):
        lo, hi = int(side.lo), int(side.hi)
        raise UsageError(f"--input-size {size[0]} {size[1]}: both sides must be >= {lo} and <= {hi} (valid: "
                         f"{lo}..{hi}); that is the range of {of}")
