"""The model card, a repository's README.md, as a huggingface_hub `ModelCard`: its metadata a `ModelCardData`
built from config.json's facts, its text the MODEL_CARD.md template with each ${placeholder} filled from the same
facts (nothing guessed)."""
from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Union

from ._card_sections import training_budget, weaknesses

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

TEMPLATE_NAME = "MODEL_CARD.md"
_LEADING_COMMENT = re.compile(r"\A\s*<!--.*?-->\s*", re.S)
_TAGS = ["visual-place-recognition", "image-retrieval", "image-feature-extraction", "clusvpr-zoo"]
# metadata keys in the order the card lists them; the template's other keys follow
_METADATA_ORDER = ["license", "library_name", "pipeline_tag", "tags", "datasets", "metrics"]


def template_path() -> Path:
    """The MODEL_CARD.md template: the packaged copy if installed, else the one at the repository root."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "data" / TEMPLATE_NAME, package / TEMPLATE_NAME, package.parent / TEMPLATE_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{TEMPLATE_NAME} not found next to the registry package or at the repository root ({package.parent}); "
        "pass model_card='path/to/template.md' to save_pretrained / push_to_hub"
    )


def model_card(
    config: Mapping[str, Any],
    template: Optional[Union[str, os.PathLike]] = None,
    repo_hint: str = "org/name@<commit>",
    citation: Optional[str] = None,
) -> "ModelCard":
    """The card of the weights `config` describes, from a template (a path, template text, or MODEL_CARD.md).

    Metadata: the template's own front matter (plain YAML: library_name, pipeline_tag, metrics, ...) with the
    facts of config.json set over it (license, tags, datasets). Text: the template's, each ${placeholder} filled
    from config.json (`card_values`); an unknown placeholder is a KeyError naming it. `citation` is the BibTeX
    of the method (the model's registry entry); without one the card says none is recorded.
    """
    from huggingface_hub import ModelCard, ModelCardData

    text = _LEADING_COMMENT.sub("", _template_text(template), count=1)
    base = ModelCard(text) if text.lstrip().startswith("---") else None
    metadata = base.data.to_dict() if base is not None else {}
    metadata.update(card_metadata(config))
    unfilled = sorted(k for k, v in metadata.items() if "${" in json.dumps(v))
    if unfilled:
        raise ValueError(
            f"model card template: the front matter is plain YAML (license, tags and datasets are set from "
            f"config.json), but {', '.join(unfilled)} hold a ${{placeholder}}: write the value, or move the "
            "placeholder into the text below the front matter"
        )
    values = card_values(config, repo_hint, citation)
    try:
        body = string.Template(base.text if base is not None else text).substitute(values)
    except KeyError as err:
        raise KeyError(f"model card template uses the unknown placeholder ${{{err.args[0]}}}; "
                       f"known ones: {sorted(values)}") from None
    data = ModelCardData(**metadata)
    order = [k for k in _METADATA_ORDER if k in metadata] + [k for k in metadata if k not in _METADATA_ORDER]
    return ModelCard(f"---\n{data.to_yaml(original_order=order)}\n---\n{body}")


def render_model_card(
    config: Mapping[str, Any],
    template: Optional[Union[str, os.PathLike]] = None,
    repo_hint: str = "org/name@<commit>",
    citation: Optional[str] = None,
) -> str:
    """README.md text: `model_card(...)` as the file holds it."""
    return str(model_card(config, template, repo_hint, citation))


def _template_text(template: Optional[Union[str, os.PathLike]]) -> str:
    if template is None:
        return template_path().read_text(encoding="utf-8")
    if isinstance(template, os.PathLike) or (isinstance(template, str) and "\n" not in template):
        return Path(template).read_text(encoding="utf-8")
    return template


def card_metadata(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The card's metadata that config.json states: license, tags (with the architecture and the aggregator) and
    training datasets."""
    cfg = dict(config.get("pretrained_cfg") or {})
    datasets = [str(d) for d in dict(config.get("training") or {}).get("datasets") or []]
    extra = [str(t) for t in (config.get("architecture"), config.get("aggregator")) if t]
    return {"license": str(cfg.get("license") or "other"), "tags": _TAGS + extra, "datasets": datasets}


def card_values(config: Mapping[str, Any], repo_hint: str = "org/name@<commit>",
                citation: Optional[str] = None) -> Dict[str, str]:
    """Placeholder values; every fact missing from config.json is said to be missing."""
    cfg = dict(config.get("pretrained_cfg") or {})
    inp = dict(config.get("input_config") or {})
    training = dict(config.get("training") or {})
    datasets = [str(d) for d in training.get("datasets") or []]
    size = inp.get("input_size") or cfg.get("input_size") or ["?", "?", "?"]
    height, width = size[-2], size[-1]
    resize = "resized to exactly {}x{} (HxW)".format(height, width) if inp.get("resize", "fixed") == "fixed" \
        else "longer side resized to {} px, aspect ratio kept".format(max(height, width))
    whitening = config.get("whitening") or {}
    aggregator = str(config.get("aggregator", "unknown"))
    trained = bool(datasets or training.get("recipe"))
    release = dict(config.get("release") or {})
    metadata = card_metadata(config)
    return {
        "license": metadata["license"],
        "tags": ", ".join(metadata["tags"]),
        "datasets": ", ".join(datasets),
        "architecture": str(config.get("architecture", "unknown")),
        "backbone": str(config.get("backbone", "unknown")),
        "aggregator": aggregator,
        "summary": _summary(config),
        "descriptor_dim": str(config.get("descriptor_dim", "unknown")),
        "whitening": f", PCA-whitened from {whitening['in_dim']}-d" if whitening.get("fitted") else "",
        "input_size": f"{height}x{width} (HxW) RGB",
        "resize": f"{resize}, {inp.get('interpolation', cfg.get('interpolation', 'bilinear'))} interpolation",
        "mean": _fmt_floats(inp.get("mean") or cfg.get("mean")),
        "std": _fmt_floats(inp.get("std") or cfg.get("std")),
        "weights_statement": (f"trained by the uploader on {', '.join(datasets) or 'data not recorded'}"
                              if trained else "no training is recorded in config.json: these weights may be "
                              "untrained (randomly initialised) or converted; ask the uploader before relying on them"),
        "repo_hint": repo_hint,
        "training_data": ", ".join(datasets) or "not recorded",
        "training_recipe": _recipe(training),
        "backbone_weights": str(config.get("backbone_weights", "not recorded")),
        "evaluation": _evaluation(config.get("evaluation")),
        "recalls": _recalls(config.get("recalls")),
        "limitations": ("" if trained else
                        "- No training is recorded for these weights: measure recalls on your data before using them.")
        + (f"\n- Not for: {release['not_for']}" if release.get("not_for") else ""),
        "domain": _domain(release, datasets),
        "training_budget": training_budget(release, training),
        "weaknesses": weaknesses(release, datasets),
        "provenance": _provenance(release, config),
        "citation": citation or "% no citation recorded for aggregator " + aggregator,
    }


def _summary(config: Mapping[str, Any]) -> str:
    """One sentence from these weights' own config: backbone, aggregator, descriptor, and the model arguments
    (the registry's description is of the default build, which these arguments may change)."""
    name = str(config.get("architecture", "unknown"))
    args = dict(config.get("model_args") or {})
    whitening = config.get("whitening") or {}
    dim = config.get("descriptor_dim", "unknown")
    text = (f"A `{name}` model of the ClusVPR model zoo: {config.get('backbone', 'unknown')} backbone, "
            f"{config.get('aggregator', 'unknown')} aggregation, {dim}-d L2-normalised descriptor")
    text += (f" (PCA-whitened from {whitening['in_dim']}-d)" if whitening.get("fitted") else ", not whitened")
    if args:
        text += "; built with the model arguments `" + json.dumps(args, sort_keys=True) + "`"
    return text + "."


def _domain(release: Mapping[str, Any], datasets: list) -> str:
    """What the weights were trained on and what they are not for (release facts), else the datasets."""
    if release.get("trained_on"):
        text = f"**Trained on:** {release['trained_on']}"
        if release.get("not_for"):
            text += f"\n\n**Not for:** {release['not_for']}"
        return text
    if datasets:
        return f"Training data: {', '.join(datasets)}; results elsewhere are not measured."
    return "No training data is recorded for these weights."


def _provenance(release: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """Release name, the exact command, seed and code commit, and the stored precision."""
    lines = []
    if release.get("name"):
        lines.append(f"- Release: `{release['name']}`, bundled in the clusvpr-zoo package: "
                     f"`registry.create(\"{release['name']}\", pretrained=True)`")
    if release.get("command"):
        lines.append(f"- Command: `{release['command']}`")
    if release.get("seed") is not None:
        lines.append(f"- Seed: {release['seed']}")
    if release.get("git_commit"):
        lines.append(f"- Code commit: {release['git_commit']}")
    if release.get("selection"):
        lines.append(f"- Selection: {release['selection']}")
    dropped = release.get("whitening_dropped")
    if dropped:
        table = ", ".join(f"{c.get('dim') or 'none'}: {c.get('R@5', float('nan')):.2f}"
                          for c in dropped.get("candidates") or [])
        lines.append(f"- Whitening: the run chose {dropped.get('chosen_on_validation') or 'none'}-d on validation "
                     f"(R@5 per candidate: {table}); this release ships without it, to fit the size budget of the "
                     "bundled releases")
    if config.get("weights_dtype"):
        lines.append(f"- Weights stored as {config['weights_dtype']}, loaded as float32")
    return "\n".join(lines) + ("\n" if lines else "")


def _recipe(training: Mapping[str, Any]) -> str:
    """The recipe's name, with the trainer's main options when config.json holds them."""
    name = str(training.get("recipe") or "not recorded")
    o = training.get("options")
    if not isinstance(o, Mapping) or "optimizer" not in o:
        return name
    gens, epochs, gen0 = o.get("generations", 1), o.get("epochs"), o.get("gen0_epochs")
    most = "at most " if o.get("patience") else ""
    schedule = (f"{gens} generations ({most}{gen0 or epochs} + {gens - 1} x {epochs} epochs)" if gens > 1
                else f"{most}{epochs} epochs")
    if o.get("patience"):
        schedule += f" with early stopping (patience {o['patience']})"
    lr = f"{o['optimizer']} lr {o.get('lr')}"
    if o.get("aggregator_lr_mult", 1.0) != 1.0:
        lr += f" (aggregator x {o['aggregator_lr_mult']:g})"
    queries = o.get("queries_per_epoch")
    parts = [schedule, f"{queries} queries per epoch" if queries else "every query each epoch", lr,
             f"weight decay {o.get('weight_decay')}", f"loss {o.get('loss')}", f"{o.get('batch_size')} tuples per step",
             f"{o.get('neg_num')} hard negative(s) from a pool of {o.get('neg_pool')}",
             _jitter(o)]
    return f"{name}: " + ", ".join(parts)


def _jitter(options: Mapping[str, Any]) -> str:
    if (options.get("extra") or {}).get("cache_features"):
        return "no colour jitter (trained from cached frozen-layer features)"
    return "colour jitter " + (str(tuple(options["jitter"])) if options.get("jitter") else "off")


def _fmt_floats(values: Any) -> str:
    if not values:
        return "not recorded"
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _evaluation(evaluation: Optional[Mapping[str, Any]]) -> str:
    if not evaluation:
        return "Not recorded: no evaluation protocol was stored with these weights."
    lines = []
    for dataset, protocol in evaluation.items():
        if isinstance(protocol, Mapping):
            details = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in protocol.items())
        else:
            details = str(protocol)
        lines.append(f"- **{dataset}**: {details}")
    return "\n".join(lines)


def _recalls(recalls: Optional[Mapping[str, Mapping[str, float]]]) -> str:
    if not recalls:
        return "Not measured: no recall values were stored with these weights."
    keys = sorted({k for r in recalls.values() for k in r}, key=lambda k: (len(k), k))
    rows = ["| Dataset | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for dataset, values in recalls.items():
        rows.append(f"| {dataset} | " + " | ".join(
            f"{float(values[k]):.2f}" if k in values else "-" for k in keys) + " |")
    note = "Recall@N in percent: a query counts when one of its N nearest database images is correct."
    return "\n".join(rows) + "\n\n" + note
