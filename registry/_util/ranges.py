"""Documented ranges of model arguments, checked before anything is built, so neither a config.json (the one layout
file without a sha256) nor a caller can make a builder allocate without bound or fail deep inside torch."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class ArgRange:
    """Valid values of one model argument: a number in lo..hi (an integer unless `integer` is False), a sequence of
    `length` such numbers, or also None when `optional`."""

    lo: float
    hi: float
    integer: bool = True
    length: Optional[int] = None
    optional: bool = False

    def describe(self) -> str:
        kind = "integers" if self.integer else "finite numbers"
        one = "an integer" if self.integer else "a finite number"
        span = f"in {self.lo:g}..{self.hi:g}"
        text = f"{self.length} {kind} {span}" if self.length else f"{one} {span}"
        return text + (", or None (null in config.json)" if self.optional else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.length is None:
            return self._number_ok(value)
        return (isinstance(value, (list, tuple)) and len(value) == self.length
                and all(self._number_ok(v) for v in value))

    def _number_ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        return math.isfinite(float(value)) and self.lo <= value <= self.hi


# arguments of registry.models.factory.build_vpr_model (and of any builder using these names)
BUILDER_RANGES: Mapping[str, ArgRange] = {
    "input_size": ArgRange(1, 8192, length=2),
    "whitening_dim": ArgRange(1, 65536, optional=True),
    "mean": ArgRange(-1000, 1000, integer=False, length=3),
    "std": ArgRange(1e-6, 1000, integer=False, length=3),
}
# a numeric argument no range is declared for (a third-party aggregator's)
UNDECLARED = ArgRange(-(2 ** 20), 2 ** 20, integer=False)


def min_side(backbone_factory: Any, aggregator_factory: Any) -> int:
    """The smallest image side a backbone + aggregator pair takes: the backbone's stride times the smallest feature
    map the aggregator needs (`min_feature_size`)."""
    return int(getattr(backbone_factory, "stride", 16)) * int(getattr(aggregator_factory, "min_feature_size", 1))


def ranges_for(backbone_factory: Any, aggregator_factory: Any) -> Mapping[str, ArgRange]:
    """The ranges of a model's arguments: the builder's (`input_size` from the pair's smallest side), and those
    its aggregator declares (`arg_ranges`)."""
    size = ArgRange(min_side(backbone_factory, aggregator_factory), BUILDER_RANGES["input_size"].hi, length=2)
    return {**BUILDER_RANGES, "input_size": size, **dict(getattr(aggregator_factory, "arg_ranges", {}) or {})}


def check_args(args: Mapping[str, Any], ranges: Mapping[str, ArgRange], where: str, fix: str) -> None:
    """ValueError naming the first argument outside its documented range, the range, `where` it came from, and `fix`.

    Strings, booleans and None are left to the builder (which checks them without allocating); any other number
    must lie in UNDECLARED's range when the model declares none for it.
    """
    for name, value in args.items():
        spec = ranges.get(name)
        if spec is None:
            if isinstance(value, bool) or value is None or not isinstance(value, numbers.Real):
                continue
            spec = UNDECLARED
        if not spec.accepts(value):
            raise ValueError(f"{where}: {name} = {value!r} is outside its documented range: it must be "
                             f"{spec.describe()}. {fix}")
