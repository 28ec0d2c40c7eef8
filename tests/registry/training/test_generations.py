"""registry.training.generations: the generation schedule and the frozen teacher."""
from __future__ import annotations

import torch
from tiny_vpr import small_config
from torch import nn

from registry.training.generations import Generations
from registry.training.loop import Step


class _TeacherFromGenerationOne:
    """A recipe's two answers the generations ask for: a teacher from generation 1 on."""

    def uses_teacher(self, generation: int) -> bool:
        return generation >= 1


def _generations(**changes):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    step = Step(model, _TeacherFromGenerationOne(), source=None, cfg=small_config(**changes))
    return model, step, Generations(step, step.recipe, step.cfg)


def _weights_equal(a: nn.Module, b: dict) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items())


def test_generation_zero_keeps_the_model_and_has_no_teacher():
    model, step, gens = _generations(generations=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gens.start(0, {k: torch.zeros_like(v) for k, v in before.items()})
    assert _weights_equal(model, before) and gens.teacher is None and gens.teacher_state() is None


def test_a_later_generation_starts_from_the_best_weights_which_become_a_frozen_teacher():
    model, step, gens = _generations(generations=2)
    best = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    gens.start(1, best)
    assert _weights_equal(model, best) and _weights_equal(gens.teacher, best)
    assert not gens.teacher.training and not any(p.requires_grad for p in gens.teacher.parameters())
    # not a submodule: DDP and the optimiser see only the model's parameters, the checkpoint has it apart
    assert set(step.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    with torch.no_grad():
        model[0].weight.add_(1.0)  # training moves the model, not its teacher
    assert _weights_equal(gens.teacher, best) and gens.teacher_state().keys() == best.keys()


def test_a_resumed_teacher_has_the_checkpoints_weights():
    model, step, gens = _generations(generations=2)
    saved = {k: torch.full_like(v, -1.0) for k, v in model.state_dict().items()}
    gens.restore_teacher(None)
    assert gens.teacher is None
    gens.restore_teacher(saved)
    assert _weights_equal(gens.teacher, saved) and not _weights_equal(model, saved)
    assert not any(p.requires_grad for p in gens.teacher.parameters())


def test_the_schedule_trains_every_epoch_of_every_generation_once():
    for changes in (dict(generations=1, epochs=3), dict(generations=3, epochs=2),
                    dict(generations=3, epochs=2, gen0_epochs=1)):
        cfg = small_config(**changes)
        _, _, gens = _generations(**changes)
        trained, started, generation, epoch = [], [], 0, 0
        while not gens.done(generation):
            nxt, nxt_epoch, starts = gens.next(generation, epoch)
            if nxt == generation:
                trained.append((generation, epoch))
                epoch += 1
                continue
            generation, epoch = nxt, nxt_epoch
            started += [generation] if starts else []
        expected = [(g, e) for g in range(cfg.generations) for e in range(cfg.epochs_of(g))]
        assert trained == expected, changes
        assert started == list(range(1, cfg.generations)), changes
