"""README.md rendered from MODEL_CARD.md: valid Hub metadata, the listed sections, and no invented facts."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import registry
import registry.hub as hub
from registry.hub._card import template_path

ROOT = Path(__file__).resolve().parents[3]
SECTIONS = ["Intended use", "Training data and recipe", "Training budget and validation curve", "Evaluation protocol",
            "Measured recalls", "Limitations", "Where it is weak", "Citation"]


def _front_matter(text: str) -> dict:
    match = re.match(r"\A---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def _readme(tiny, tmp_path, **facts) -> str:
    model, _ = tiny
    return (hub.save_pretrained(model, tmp_path / "m", **facts) / "README.md").read_text()


def test_card_has_hub_metadata_and_every_section(tiny, tmp_path):
    text = _readme(tiny, tmp_path, training={"datasets": ["pitts30k"], "recipe": "triplet loss, 5 epochs"})
    meta = _front_matter(text)
    assert meta["license"] == "mit" and meta["library_name"] == "clusvpr-zoo"
    assert meta["datasets"] == ["pitts30k"] and meta["metrics"] == ["recall"]
    assert "visual-place-recognition" in meta["tags"] and "hubtest_tiny_netvlad" in meta["tags"]
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
    assert "triplet loss, 5 epochs" in text and "<!--" not in text and "${" not in text


def test_measured_recalls_and_protocol_come_from_the_config(tiny, tmp_path):
    text = _readme(
        tiny, tmp_path,
        evaluation={"pitts30k_test": {"queries": "6816 test queries", "resize": "480x640 fixed"}},
        recalls={"pitts30k_test": {"R@1": 81.46, "R@5": 91.2, "R@10": 93.9}},
    )
    assert "| Dataset | R@1 | R@5 | R@10 |" in text and "| pitts30k_test | 81.46 | 91.20 | 93.90 |" in text
    assert "queries: 6816 test queries; resize: 480x640 fixed" in text
    assert "Not measured" not in text


def test_missing_facts_are_said_to_be_missing(tiny, tmp_path):
    text = _readme(tiny, tmp_path)
    assert "Not measured: no recall values were stored" in text
    assert "Training data: not recorded" in text
    assert "may be untrained" in text
    assert _front_matter(text)["datasets"] == []


def test_summary_describes_these_weights_not_the_registry_default(tiny, tmp_path):
    model, _ = tiny
    model.config["model_args"] = {"num_clusters": 4}
    text = (hub.save_pretrained(model, tmp_path / "m") / "README.md").read_text()
    assert '`{"num_clusters": 4}`' in text and "registry default" not in text
    assert f"{model.descriptor_dim}-d L2-normalised descriptor" in text
    whitened = "PCA-whitened from" in text.split("## How to use")[0]
    assert whitened == bool(model.whitening is not None and model.whitening.fitted)


def test_release_facts_state_domain_provenance_and_precision(tiny, tmp_path):
    release = {"name": "hubtest_tiny_netvlad.demo", "trained_on": "Nordland winter/summer places 1..1600",
               "not_for": "street-level imagery", "command": "bash benchmarks/release.sh train x", "seed": 3,
               "git_commit": "a" * 40}
    model, _ = tiny
    folder = hub.save_pretrained(model, tmp_path / "m", release=release, dtype="float16")
    text = (folder / "README.md").read_text()
    assert "**Trained on:** Nordland winter/summer places 1..1600" in text
    assert "**Not for:** street-level imagery" in text and "- Not for: street-level imagery" in text
    assert "- Command: `bash benchmarks/release.sh train x`" in text and "- Seed: 3" in text
    assert "- Code commit: " + "a" * 40 in text and "Weights stored as float16, loaded as float32" in text
    assert "25 m" not in text and "street-level imagery)" not in text


def test_custom_template_with_an_unknown_placeholder_fails_loudly(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(KeyError, match="unknown placeholder"):
        hub.save_pretrained(model, tmp_path / "m", model_card="---\nlicense: mit\n---\n${nonsense}\n")
    assert not (tmp_path / "m").exists()


def test_template_lists_exactly_the_released_checkpoints():
    # Honesty: MODEL_CARD.md names the releases; that must stay true of the registry.
    text = template_path().read_text()
    assert text == (ROOT / "MODEL_CARD.md").read_text()
    released = registry.list_models(pretrained=True)
    listed = re.search(r"Released checkpoints: (.*?), bundled", text, re.S).group(1).replace("\n", " ")
    assert sorted(re.findall(r"[a-z0-9_]+\.[a-z0-9_]+", listed)) == released


def test_the_recipe_line_states_the_trainers_options(tiny, tmp_path):
    from registry.training import TrainConfig

    options = TrainConfig(generations=4, gen0_epochs=3, epochs=2, queries_per_epoch=400, optimizer="adam", lr=1e-5,
                          aggregator_lr_mult=3, extra={"cache_features": True}).to_dict()
    text = _readme(tiny, tmp_path, training={"datasets": ["nordland_train"], "recipe": "pyramid", "options": options})
    assert ("pyramid: 4 generations (3 + 3 x 2 epochs), 400 queries per epoch, adam lr 1e-05 (aggregator x 3)"
            in text)
    assert "no colour jitter (trained from cached frozen-layer features)" in text
    options.update(generations=1, aggregator_lr_mult=1.0, queries_per_epoch=None, extra={})
    text = _readme(tiny, tmp_path / "plain", training={"recipe": "global", "options": options})
    assert "global: 2 epochs, every query each epoch, adam lr 1e-05, weight decay" in text
    assert "colour jitter (0.7, 0.7, 0.7, 0.5)" in text and "aggregator x" not in text


def test_the_citation_comes_from_the_model_entry(tiny, tiny_model_name, tmp_path, monkeypatch):
    # a NetVLAD variant without its own citation is cited as NetVLAD (the core entry's BibTeX)
    assert "@inproceedings{arandjelovic2016netvlad," in _readme(tiny, tmp_path / "a")
    entry = registry.get_entry(tiny_model_name)
    monkeypatch.setattr(entry, "citation", "@misc{tiny2026, title = {A tiny test model}}")
    text = _readme(tiny, tmp_path / "b")
    assert "@misc{tiny2026, title = {A tiny test model}}" in text and "arandjelovic2016netvlad" not in text
    assert "xu2023clusvpr" in registry.get_entry("clusvpr_vgg16").citation  # the plugin's, not the core's


def test_the_card_is_a_model_card_whose_metadata_round_trips(tiny, tmp_path):
    from huggingface_hub import ModelCard

    text = _readme(tiny, tmp_path, training={"datasets": ["pitts30k"]})
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert str(card) == text  # ModelCard writes back exactly what it read
    assert card.data.to_dict() == {
        "license": "mit", "library_name": "clusvpr-zoo", "pipeline_tag": "image-feature-extraction",
        "tags": ["visual-place-recognition", "image-retrieval", "image-feature-extraction", "clusvpr-zoo",
                 "hubtest_tiny_netvlad", "netvlad"],
        "datasets": ["pitts30k"], "metrics": ["recall"],
    }
    assert card.text.lstrip().startswith("# hubtest_tiny_netvlad\n")


def test_a_custom_templates_own_metadata_is_kept_and_config_facts_are_set_over_it(tiny, tmp_path):
    model, _ = tiny
    template = "---\nlanguage: en\nlicense: apache-2.0\n---\n# ${architecture}\n"
    folder = hub.save_pretrained(model, tmp_path / "m", model_card=template)
    meta = _front_matter((folder / "README.md").read_text())
    assert meta["language"] == "en" and meta["license"] == "mit"  # the weights' license, from config.json
    assert "hubtest_tiny_netvlad" in meta["tags"] and meta["datasets"] == []


def test_a_placeholder_in_the_templates_front_matter_is_refused(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(ValueError, match="front matter is plain YAML.*model_name hold a"):
        hub.save_pretrained(model, tmp_path / "m", model_card="---\nmodel_name: ${architecture}\n---\n# card\n")
    assert not (tmp_path / "m").exists()


def test_generate_model_card_gives_the_metadata_save_pretrained_writes(tiny, tmp_path):
    from huggingface_hub import ModelCard

    model, _ = tiny
    folder = model.save_pretrained(tmp_path / "m")
    assert model.generate_model_card().data.to_dict() == ModelCard.load(folder / "README.md").data.to_dict()


def test_a_card_without_a_training_log_or_an_untrained_start_says_both_are_missing(tiny, tmp_path):
    text = _readme(tiny, tmp_path, training={"datasets": ["pitts30k"]})
    assert "## Training budget and validation curve\n\nNot recorded: config.json holds no training budget" in text
    weak = text.split("## Where it is weak\n", 1)[1].split("\n## ", 1)[0]
    assert "**Domains it has not seen:** any but its training data (pitts30k)." in weak
    assert "was not given for these weights" in weak and "->" not in weak


def test_the_budget_of_a_run_without_early_stopping_says_every_generation_trained_its_maximum(tiny, tmp_path):
    gens = [{"generation": g, "epochs": 3, "max_epochs": 3, "stale_epochs": 1, "stopped": "max_epochs"}
            for g in range(2)]
    budget = {"select_by": "R@5", "patience": None, "generations": 2, "generations_trained": gens,
              "epochs_trained": 6, "chosen": {"generation": 1, "epoch": 2, "recalls": {"R@1": 1, "R@5": 2, "R@10": 3}},
              "epoch_seconds": 7200.0, "train_seconds": 9000.0, "wall_seconds": None, "cpu_seconds": None}
    text = _readme(tiny, tmp_path, release={"budget": budget})
    assert "- Stopping rule: no early stopping: every generation trains its maximum; 2 generations of at most " \
           "2 x 3 epochs" in text
    assert "generation 0: 3 of at most 3 (its maximum reached); generation 1: 3 of at most 3 (its maximum " \
           "reached); 6 in all" in text
    assert "- Epoch chosen: generation 1, epoch 2, the best validation R@5 of the run (R@1 / R@5 / R@10: " \
           "1.00 / 2.00 / 3.00)" in text
    assert "training with validation 2.50 h (9000 s), the whole command with its final evaluation not recorded" in text
    assert "Validation recalls on" not in text  # no curve recorded: no table
