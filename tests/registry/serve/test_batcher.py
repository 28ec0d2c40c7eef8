"""The dynamic batcher: concurrent submissions are encoded together (at most max_batch per call, in submission
order, each image getting its own descriptor back), the queue is bounded (QueueFull with a Retry-After estimate,
nothing of a refused request held), and a failing encode call fails only its own images."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from registry.serve.batcher import Batcher, QueueFull


class Recorder:
    """encode(images) -> one row [x, 2x] per image; records every batch; `gate` (when set) holds each call."""

    def __init__(self, gate=None, fail_on=None):
        self.batches, self.gate, self.fail_on = [], gate, fail_on
        self.lock = threading.Lock()

    def __call__(self, images):
        if self.gate is not None:
            assert self.gate.wait(10)
        with self.lock:
            self.batches.append(list(images))
        if self.fail_on is not None and self.fail_on in images:
            raise RuntimeError(f"cannot encode {self.fail_on}")
        return np.array([[x, 2 * x] for x in images], np.float32)


def test_concurrent_submissions_are_encoded_together_and_each_gets_its_own_descriptor():
    enc = Recorder()
    sizes = []
    b = Batcher(enc, max_batch=16, max_wait_ms=200, max_queue=64, on_batch=lambda n, s: sizes.append(n))
    try:
        start = threading.Barrier(12)
        out = {}

        def client(i):
            start.wait()
            out[i] = b.submit([i])[0].result(10)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        b.close()
    assert sorted(out) == list(range(12))
    for i, got in out.items():  # every client got the row of its own image, whichever batch it was in
        np.testing.assert_array_equal(got.descriptor, [i, 2 * i])
        assert got.batch_size >= 1 and got.queue_s >= 0 and got.encode_s >= 0
    assert len(enc.batches) < 12 and max(sizes) > 1
    assert sorted(x for batch in enc.batches for x in batch) == list(range(12))


def test_a_batch_holds_at_most_max_batch_images_in_submission_order():
    gate = threading.Event()
    enc = Recorder(gate)
    b = Batcher(enc, max_batch=16, max_wait_ms=50, max_queue=64)
    try:
        first = b.submit([-1])  # holds the worker at the gate while the next 40 queue up
        time.sleep(0.2)
        futures = b.submit(list(range(40)))
        gate.set()
        results = [f.result(10) for f in first + futures]
    finally:
        b.close()
    assert [len(batch) for batch in enc.batches] == [1, 16, 16, 8]
    assert [x for batch in enc.batches[1:] for x in batch] == list(range(40))
    assert [r.descriptor[0] for r in results[1:]] == list(range(40))


def test_a_full_queue_refuses_a_request_whole_with_a_retry_after_and_serves_again_once_drained():
    gate = threading.Event()
    enc = Recorder(gate)
    b = Batcher(enc, max_batch=4, max_wait_ms=0, max_queue=8)
    try:
        running = b.submit([100])  # taken by the worker, held at the gate
        time.sleep(0.2)
        queued = b.submit(list(range(6)))
        with pytest.raises(QueueFull, match=r"6 images are queued .* at most 8 may wait \(--queue\)") as refused:
            b.submit([7, 8, 9])  # 6 + 3 > 8: none of the three is queued
        assert refused.value.retry_after >= 1
        assert b.depth() == 6
        more = b.submit([7, 8])  # 6 + 2 fits
        gate.set()
        done = [f.result(10).descriptor[0] for f in running + queued + more]
        assert done == [100, 0, 1, 2, 3, 4, 5, 7, 8]
        assert b.submit([9])[0].result(10).descriptor[0] == 9
    finally:
        gate.set()
        b.close()


def test_the_pixel_bound_refuses_what_would_overflow_it_but_always_takes_a_request_into_an_empty_queue():
    gate = threading.Event()
    b = Batcher(Recorder(gate), max_batch=2, max_wait_ms=0, max_queue=100, max_cost=1000)
    try:
        b.submit([0], costs=[5000])  # alone: taken although over the bound
        time.sleep(0.2)
        b.submit([1], costs=[600])
        with pytest.raises(QueueFull, match=r"600 pixels .* at most 1,000 may wait \(--queue-pixels\)"):
            b.submit([2], costs=[500])
        b.submit([3], costs=[400])
    finally:
        gate.set()
        b.close()


def test_a_failing_encode_call_fails_its_own_images_and_the_next_batch_is_served():
    enc = Recorder(fail_on=3)
    b = Batcher(enc, max_batch=8, max_wait_ms=0, max_queue=16)
    try:
        bad = b.submit([3])[0]
        with pytest.raises(RuntimeError, match="cannot encode 3"):
            bad.result(10)
        assert b.submit([4])[0].result(10).descriptor[1] == 8
    finally:
        b.close()


def test_batcher_settings_outside_their_range_are_refused():
    for kwargs, message in (({"max_batch": 0}, "max_batch"), ({"max_queue": 0}, "max_queue"),
                            ({"threads": 0}, "threads"), ({"max_wait_ms": -1}, "max_wait_ms")):
        with pytest.raises(ValueError, match=message):
            Batcher(Recorder(), **kwargs)
