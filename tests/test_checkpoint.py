"""Checkpoints and the workdir check: round trip, old checkpoints with an `rng` entry, refusals.

The training run's side (`train_checkpoint`: the typed state in and out) is tested in
test_train_checkpoint.py; resuming a real run (SIGKILL during a save included) end to end in
test_train.py.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import smoke
from fnst_jax import checkpoint, train_step
from fnst_jax.train_step import TrainingError


def small_state() -> dict:
    """A train state in the layout checkpoints hold (`TrainState.to_dict`)."""
    params = {"w": jnp.arange(3.0), "b": jnp.ones((2, 2))}
    return train_step.new_state(params, optax.adam(0.1)).to_dict()


def save_one(workdir, step: int, state: dict, run_info: dict | None = None) -> None:
    manager = checkpoint.make_manager(workdir, keep=2)
    try:
        checkpoint.save(manager, step, state, {"position": step}, run_info or {"weights": 1})
        manager.wait_until_finished()
    finally:
        manager.close()


def restore(workdir, state: dict):
    manager = checkpoint.make_manager(workdir, keep=2)
    try:
        return checkpoint.restore_latest(manager, checkpoint.abstract_like(state))
    finally:
        manager.close()


def test_round_trip_of_the_latest_checkpoint(tmp_path):
    assert restore(tmp_path, small_state()) is None
    state = small_state()
    save_one(tmp_path, 3, state)
    later = dict(state, step=jnp.int32(7), params={"w": jnp.zeros(3), "b": jnp.ones((2, 2))})
    save_one(tmp_path, 7, later, {"weights": 2})
    step, restored, data_state, run_info = restore(tmp_path, state)
    assert step == 7 and data_state == {"position": 7} and run_info == {"weights": 2}
    assert restored.keys() == later.keys()
    jax.tree.map(np.testing.assert_array_equal, restored, later)


def test_old_checkpoint_with_an_rng_entry_is_restored_without_it(tmp_path):
    """fnst_jax 0.1 saved an unused PRNG key in the train state; such workdirs still resume."""
    state = small_state()
    save_one(tmp_path, 5, dict(state, rng=jax.random.PRNGKey(0)))
    step, restored, _, _ = restore(tmp_path, state)
    assert step == 5 and restored.keys() == state.keys()
    jax.tree.map(np.testing.assert_array_equal, restored, state)


def test_checkpoint_of_another_state_layout_is_refused_naming_it(tmp_path):
    state = small_state()
    save_one(tmp_path, 2, dict(state, ema_params=state["params"]))
    with pytest.raises(TrainingError, match=rf"{tmp_path}.*ema_params.*new --workdir"):
        restore(tmp_path, state)
    missing = {k: v for k, v in state.items() if k != "nonfinite_total"}
    save_one(tmp_path / "other", 2, missing)
    with pytest.raises(TrainingError, match="nonfinite_total"):
        restore(tmp_path / "other", state)


def test_restore_params_reads_params_and_model_metadata_of_any_kept_step(tmp_path):
    assert checkpoint.restore_params(tmp_path) is None
    assert checkpoint.checkpoint_steps(tmp_path) == []
    state = small_state()
    save_one(tmp_path, 4, dict(state, rng=jax.random.PRNGKey(1)), {"model_metadata": {"pad": 4}})
    later = dict(state, params={"w": jnp.zeros(3), "b": jnp.ones((2, 2))})
    save_one(tmp_path, 9, later, {"model_metadata": {"pad": 9}})
    assert checkpoint.checkpoint_steps(tmp_path) == [4, 9]
    for step, expected, pad in ((None, later, 9), (9, later, 9), (4, state, 4)):
        params, meta = checkpoint.restore_params(tmp_path, step)
        assert meta == {"pad": pad}
        jax.tree.map(
            np.testing.assert_array_equal, params, jax.tree.map(np.asarray, expected["params"])
        )
    with pytest.raises(TrainingError, match=r"no checkpoint of step 5 \(kept: 4, 9\)"):
        checkpoint.restore_params(tmp_path, 5)


def test_workdir_config_check(tmp_path):
    config = smoke.get_config()
    workdir = checkpoint.prepare_workdir(tmp_path / "run", config)
    recorded = json.loads((workdir / checkpoint.CONFIG_FILE).read_text())
    assert recorded["train"]["steps"] == config.train.steps

    # Resumable keys may change; the file then records the new values.
    config.train.steps = 99
    config.log_every = 7
    config.validation_size = 64  # only what validation logs
    checkpoint.check_workdir_config(workdir, config)
    assert json.loads((workdir / checkpoint.CONFIG_FILE).read_text())["train"]["steps"] == 99

    changed = smoke.get_config()
    changed.loss.tv_weight = 5.0
    changed.train.lr = 0.5
    with pytest.raises(TrainingError, match=r"loss.tv_weight: 0.1 -> 5.0.*train.lr"):
        checkpoint.check_workdir_config(workdir, changed)


def test_run_recorded_before_a_key_existed_resumes_with_its_neutral_value(tmp_path):
    """A workdir of a version without loss.stability_weight ran without the term: it resumes
    with the term off, and is refused with it on."""
    config = smoke.get_config()
    workdir = checkpoint.prepare_workdir(tmp_path / "run", config)
    recorded = json.loads((workdir / checkpoint.CONFIG_FILE).read_text())
    del recorded["loss"]["stability_weight"]
    (workdir / checkpoint.CONFIG_FILE).write_text(json.dumps(recorded))
    checkpoint.check_workdir_config(workdir, config)
    (workdir / checkpoint.CONFIG_FILE).write_text(json.dumps(recorded))
    del recorded["validation_size"]  # a run from before validation at the users' size
    config.validation_size = 512
    checkpoint.check_workdir_config(workdir, config)
    (workdir / checkpoint.CONFIG_FILE).write_text(json.dumps(recorded))
    config.loss.stability_weight = 1.0
    with pytest.raises(TrainingError, match=r"loss.stability_weight: 0.0 -> 1.0"):
        checkpoint.check_workdir_config(workdir, config)


def test_unusable_workdirs_are_user_errors(tmp_path):
    config = smoke.get_config()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(TrainingError, match="cannot create"):
        checkpoint.prepare_workdir(not_a_folder / "run", config)
    (tmp_path / checkpoint.CONFIG_FILE).write_text("{cut off")
    with pytest.raises(TrainingError, match="unreadable run config"):
        checkpoint.prepare_workdir(tmp_path, config)


def _export_best(workdir, step: int, metadata_extra: dict) -> None:
    from flax import nnx

    from fnst_jax import export, model_file
    from fnst_jax.transformer_net import TransformerNet

    model = TransformerNet(rngs=nnx.Rngs(0))
    export.save_model(workdir / model_file.BEST_FILENAME, model, {"step": step, **metadata_extra})


def test_best_model_compares_with_the_record_in_best_npz(tmp_path):
    fresh = checkpoint.BestModel(tmp_path, resumed=False)
    assert fresh.step is None
    assert not fresh.improves(0, {"total": 1.0})  # step 0: the untrained network
    assert not fresh.improves(3, {"total": float("nan")})
    assert fresh.improves(3, {"total": 1e30})
    fresh.record(3, {"total": 2.0})
    assert fresh.step == 3 and fresh.improves(6, {"total": 1.9})
    assert not fresh.improves(6, {"total": 2.0})  # a tie keeps the earlier model

    _export_best(tmp_path, 4, {"validation": {"total": 2.0, "style_reduction": 3.0}})
    resumed = checkpoint.BestModel(tmp_path, resumed=True)
    assert (resumed.step, resumed.total) == (4, 2.0)
    assert not resumed.improves(8, {"total": 2.5}) and resumed.improves(8, {"total": 1.5})
    # A fresh run in the workdir ignores an earlier run's best.npz.
    assert checkpoint.BestModel(tmp_path, resumed=False).step is None
    # Processes other than 0 never export and never read.
    other = checkpoint.BestModel(tmp_path, resumed=True, enabled=False)
    assert other.step is None and not other.improves(8, {"total": 0.1})


@pytest.mark.parametrize(
    "metadata", [{}, {"validation": {}}, {"validation": {"total": "x"}}], ids=str
)
def test_best_model_without_a_usable_record_starts_over(tmp_path, metadata):
    _export_best(tmp_path, 4, metadata)
    best = checkpoint.BestModel(tmp_path, resumed=True)
    assert best.step is None and best.improves(5, {"total": 1e30})
    (tmp_path / "best.npz").write_bytes(b"not a model")
    assert checkpoint.BestModel(tmp_path, resumed=True).step is None
