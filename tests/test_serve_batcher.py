"""The service's queue (`fnst_jax.serve.batcher`): batches of one group in powers of two,
a bounded queue that drains, deadlines; with a fake model that records its batches."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fnst_jax.serve import batcher as batcher_module
from fnst_jax.serve.errors import ServiceError


class _FakeStylizer:
    """Records the batches it is given; 'stylizes' by adding 1."""

    def __init__(self):
        self.calls: list[int] = []

    def bucket_shape(self, height, width):
        return (64 * -(-height // 64), 64 * -(-width // 64))

    def stylize_batch(self, images, preserve_color=False):
        self.calls.append(len(images))
        return [image + 1 for image in images]


class _FakeModel:
    def __init__(self, name="fake"):
        self.name = name
        self.stylizers = [_FakeStylizer()]


def _job(model, size=8, preserve_color=False, timeout_s=30.0):
    image = np.zeros((size, size, 3), np.uint8)
    deadline = time.monotonic() + timeout_s
    return batcher_module.Job(model, image, preserve_color, deadline=deadline, timeout_s=timeout_s)


def test_batcher_takes_powers_of_two_of_one_group_and_skips_cancelled():
    model = _FakeModel()
    queue = batcher_module.Batcher(max_batch=8, max_wait_s=0.2, queue_size=32)
    jobs = [_job(model) for _ in range(6)] + [
        _job(model, size=100),
        _job(model, preserve_color=True),
    ]
    futures = [queue.submit(queue.reserve(), job) for job in jobs]
    futures[2].cancel()  # the client went away
    queue.start()
    results = [f.result(10) for i, f in enumerate(futures) if i != 2]
    queue.stop()
    # 5 live requests of one group run as 4 + 1 (no padding to 8); the other size and the
    # other option run alone.
    assert sorted(model.stylizers[0].calls) == [1, 1, 1, 4]
    assert all(r.image.max() == 1 for r in results)
    assert sorted(r.batch_size for r in results) == [1, 1, 1, 4, 4, 4, 4]


def test_batcher_bounds_the_queue_and_drains():
    model = _FakeModel()
    queue = batcher_module.Batcher(max_batch=4, max_wait_s=60, queue_size=2)
    first = queue.reserve()
    queue.submit(first, job := _job(model))
    second = queue.reserve()
    with pytest.raises(ServiceError) as refused:
        queue.reserve()
    assert refused.value.status == 503 and "Retry-After" in refused.value.headers
    queue.reserve(admitted=True).release()  # an admitted request's next pass: never refused
    second.release()
    second.release()  # idempotent
    assert queue.depth == 1
    queue.start()
    queue.drain()  # stops waiting the 60 s for the batch to fill
    assert job.future.result(10).batch_size == 1
    with pytest.raises(ServiceError) as closed:
        queue.reserve()
    assert closed.value.code == "shutting_down"
    queue.reserve(admitted=True).release()  # admitted requests finish while draining
    queue.stop(timeout_s=10)


def test_batcher_fails_requests_past_their_deadline():
    model = _FakeModel()
    queue = batcher_module.Batcher(max_batch=4, max_wait_s=0.3, queue_size=4)
    late = queue.submit(queue.reserve(), _job(model, timeout_s=0.05))
    queue.start()
    with pytest.raises(ServiceError) as error:
        late.result(10)
    assert error.value.status == 504
    queue.stop()
    assert model.stylizers[0].calls == []
