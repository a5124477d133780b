"""jaxrl_dist: distributed reinforcement learning in JAX.

The Python API (imported on first use, so that ``import jaxrl_dist`` stays light):
  make_config(agent, env, **overrides)   the validated per-env defaults (api.py)
  train(config, *, workdir=None, progress_fn=None, **settings) -> TrainResult
  load_policy(workdir, seed=0)           a trained policy to act with (policy.py)
  register_gymnax_env(env_id, env, params=None)   a gymnax Environment as an --env id

Modules:
  losses         pure, jit-able RL maths (GAE, PPO objectives, V-trace, actor-critic,
                 n-step double-Q) on time-major [T, B] arrays.
  agents         registry of --agent names; base.py (an agent's pure functions),
                 on_device.py (its update with gymnax envs), host_learner.py (its
                 learning step on batches from host actors); ppo, impala, a2c, apex.
  training       on-device ("Anakin") runs.
  host_training  host-actor ("Sebulba") runs: actor threads, parameter server, learner.
  run            the run shell both share: settings, resume, writers, progress,
                 finite guard, checkpoints, evaluation, summary, plot.
  tuning         the one switch between CPU-tuned and plain programs.
  cpu            what exists only to make XLA's CPU backend faster (used via tuning).
  envs           on-device gymnax adapter, Gymnasium vector envs for host actors.
  actors         on-device rollouts, host actor threads, the parameter server.
  replay         prioritized replay (sum tree) as pure functions.
  networks       flax policy, value and Q networks (MLP, CNN, Nature or IMPALA torso).
  initializers   orthogonal init without LAPACK (batched LAPACK hangs XLA's CPU pool).
  distributions  categorical, diagonal-Gaussian and ε-greedy action distributions.
  parallel       device mesh and shard_map helpers (the only module that knows meshes).
  distributed    jax.distributed for several processes.
  checkpoint     orbax checkpoints of a run and of its final parameters.
  evaluation     greedy episodes on device or on host envs.
"""

__version__ = "0.1.0"

_API = {
    "make_config": ("jaxrl_dist.api", "make_config"),
    "train": ("jaxrl_dist.api", "train"),
    "TrainResult": ("jaxrl_dist.api", "TrainResult"),
    "load_policy": ("jaxrl_dist.policy", "load_policy"),
    "register_gymnax_env": ("jaxrl_dist.envs.gymnax_env", "register"),
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attribute = _API[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'jaxrl_dist' has no attribute {name!r}")
