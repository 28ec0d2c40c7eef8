"""Training inputs: colour jitter only on training items of image sources; batched tuples keep their order."""
from __future__ import annotations

import torch

import registry
from registry.training.sources import ImageSource, stack_items, tuple_loader


def test_colour_jitter_applies_to_training_items_only(tiny_sets):
    model = registry.create("tiny_gem")
    paths = tiny_sets[0].db_images[:2]
    jittered = ImageSource(paths, model.input_config, jitter=(0.7, 0.7, 0.7, 0.5))
    plain = ImageSource(paths, model.input_config)
    torch.testing.assert_close(jittered.item(0, train=False), plain.item(0, train=False))
    torch.testing.assert_close(plain.item(0, train=True), plain.item(0, train=False))
    torch.manual_seed(0)
    assert not torch.allclose(jittered.item(0, train=True), plain.item(0, train=False))


def test_tuple_batches_stack_items_in_tuple_order(tiny_sets):
    model = registry.create("tiny_gem")
    source = ImageSource(tiny_sets[0].db_images, model.input_config)
    tuples = [[3, 1, 2], [0, 5, 4]]
    (batch,) = list(tuple_loader(source, tuples, batch_size=2))
    assert batch.shape == (2, 3, 3, 32, 48)
    torch.testing.assert_close(batch[1], stack_items(source, [0, 5, 4], train=False))
