"""jit and pmap placements on this process's devices: what the step takes, and back."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnst_jax.placement import JitPlacement, PmapPlacement, make_placement
from fnst_jax.train_step import TrainingError


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_state_goes_to_the_step_and_comes_back_unchanged(parallel):
    placement = make_placement(parallel)
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(4)}
    replicated = placement.replicate(tree)
    on_device = placement.to_device(replicated)
    # What a step gives back: the outputs of a jitted or pmapped function.
    identity = jax.pmap(lambda x: x) if parallel == "pmap" else jax.jit(lambda x: x)
    stepped = identity(on_device)
    back = placement.from_device(stepped)
    jax.tree.map(np.testing.assert_array_equal, back, tree)
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(back))
    local = np.zeros((4, 8, 8, 3), np.float32)
    count = jax.local_device_count()
    if parallel == "pmap":  # a copy per device, the batch split along the device axis
        assert isinstance(placement, PmapPlacement)
        assert on_device["w"].shape == (count, 2, 3)
        assert placement.batch(local).shape == (count, 4 // count, 8, 8, 3)
    else:  # global arrays as they are, the batch one global array
        assert isinstance(placement, JitPlacement)
        assert on_device["w"] is replicated["w"]
        assert placement.batch(local).shape == (4 * jax.process_count(), 8, 8, 3)
    np.testing.assert_array_equal(placement.read(stepped)["w"], tree["w"])


def test_unknown_parallel_is_a_user_error():
    with pytest.raises(TrainingError, match="'jit' or 'pmap', not 'vmap'"):
        make_placement("vmap")
