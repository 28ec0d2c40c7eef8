"""A release against its untrained start (the same architecture and options, the off-the-shelf backbone and the
k-means centres its training began from, no training), as release facts: the start's recalls come from the JSON
the zoo's untrained-start benchmark writes (`{"command", "datasets", "models": [{"release", "architecture",
"start_command", "start": {dataset: {"R@1", "R@5", "R@10"}}, ...}]}`), the release's from its own measurement of
the stored weights. A cell where the release is below its start is listed in `worse`."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

NS = ("R@1", "R@5", "R@10")


def check_result(result: Any, what: str) -> None:
    """Raise ValueError naming `what` and the first entry that is not as the untrained-start benchmark writes it."""
    fix = "pass the JSON benchmarks/untrained_start.py wrote (benchmarks/untrained/start.json)"
    models = result.get("models") if isinstance(result, Mapping) else None
    if not isinstance(models, list):
        raise ValueError(f"{what}: no 'models' list; {fix}")
    for i, model in enumerate(models):
        start = model.get("start") if isinstance(model, Mapping) else None
        if not isinstance(start, Mapping) or not isinstance(model.get("architecture"), str):
            raise ValueError(f"{what}: models[{i}] has no 'architecture' or no 'start' recalls; {fix}")
        for dataset, row in start.items():
            if not isinstance(row, Mapping) or any(not isinstance(row.get(n), (int, float)) for n in NS):
                raise ValueError(f"{what}: models[{i}] ({model['architecture']}) start on {dataset} lacks one of "
                                 f"{', '.join(NS)}; {fix}")


def start_of(result: Mapping[str, Any], architecture: str) -> Optional[Mapping[str, Any]]:
    """The entry of `architecture` in an untrained-start result, None when it has none."""
    return next((m for m in result["models"] if m["architecture"] == architecture), None)


def worse_at(start: Mapping[str, float], release: Mapping[str, float]) -> List[str]:
    """The recalls at which `release` is below `start`."""
    return [n for n in NS if float(release[n]) < float(start[n])]


def comparison(result: Mapping[str, Any], architecture: str, recalls: Mapping[str, Mapping[str, float]],
               measured: Mapping[str, Mapping[str, float]]) -> Dict[str, Any]:
    """The release facts of the comparison: per dataset of the start, the start's and the release's recalls (from
    `recalls`, the release's recorded ones, else from `measured`) and where the release is worse; without an entry
    for `architecture`, the facts say so and compare nothing."""
    facts: Dict[str, Any] = {"command": result.get("command"), "architecture": architecture}
    entry = start_of(result, architecture)
    if entry is None:
        return {**facts, "rows": {}, "worse": {}, "missing": True}
    rows = {}
    for dataset, start in entry["start"].items():
        release = recalls.get(dataset) or measured[dataset]
        rows[dataset] = {"start": {n: float(start[n]) for n in NS}, "release": {n: float(release[n]) for n in NS},
                         "release_from": "recalls" if dataset in recalls else "measured"}
    worse = {d: worse_at(r["start"], r["release"]) for d, r in rows.items()}
    return {**facts, "start_of": entry.get("release"), "start_command": entry.get("start_command"), "rows": rows,
            "worse": {d: w for d, w in worse.items() if w}}
