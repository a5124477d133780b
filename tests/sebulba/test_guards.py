"""Guards on the host-actor path: a NaN stops the run, names the update and keeps finite
parameters. (The on-device guard is tested in test_resume.py, with its checkpoints.)"""

import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.run import checkpoint
from jaxrl_dist.sebulba import learner as host_learner
from jaxrl_dist.sebulba import training as host_training

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


def test_host_actor_run_stops_on_a_nan_loss_and_saves_the_last_finite_params(
    tmp_path, monkeypatch
):
    original = host_learner.HostLearner._local_update

    def poisoned(self, state, trajs, key):
        state, metrics = original(self, state, trajs, key)
        bad = state.update_step >= 6  # the 6th update and later go NaN
        params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), state.params)
        metrics = dict(metrics, **{"loss/total": jnp.where(bad, jnp.nan, metrics["loss/total"])})
        return state._replace(params=params), metrics

    monkeypatch.setattr(host_learner.HostLearner, "_local_update", poisoned)
    config = agents.default_config(
        "a2c", "gymnasium:CartPole-v1", rollout_len=5, total_steps=2 * 4 * 5 * 12
    )
    host = host_training.HostSettings(actor_threads=2, envs_per_thread=4, deterministic=True,
                                         learner_devices=(1,))
    settings = training.RunSettings(eval_episodes=2, log_points=6, progress_every_s=1e9)
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    with pytest.raises(errors.NonFiniteError) as info:
        host_training.train_host(config, settings, host, workdir, log=lambda s: None)
    assert str(info.value) == (
        "non-finite loss/total (update 6); stopped, parameters of update 4 (the last finite "
        "ones) saved in checkpoint/"
    )
    params = checkpoint.load_params(os.path.join(workdir, "checkpoint"))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
    assert not [t for t in threading.enumerate() if t.name.startswith("actor-") and t.is_alive()]
