"""jaxrl_dist: distributed reinforcement learning in JAX.

The Python API (imported on first use, so that ``import jaxrl_dist`` stays light):
  make_config(agent, env, **overrides)   the validated per-env defaults (api.py)
  train(config, *, workdir=None, progress_fn=None, **settings) -> TrainResult
  load_policy(workdir, seed=0)           a trained policy to act with (policy.py)
  register_gymnax_env(env_id, env, params=None)   a gymnax Environment as an --env id

Rooms (BUILD.md, "Layout"; each imports only the rooms listed above it):
  errors, types  exceptions; Transition, ActingFunctions (time-major [T, B, ...]).
  cpu, tuning    the one switch between CPU-tuned and plain programs, and the CPU helpers.
  losses         pure, jit-able RL maths (GAE, PPO objectives, V-trace, actor-critic,
                 n-step double-Q) on time-major [T, B] arrays.
  replay         prioritized replay (sum tree), frame-deduplicated replay: pure functions.
  nn             flax torsos and heads, LAPACK-free initializers, action distributions.
  parallel       device mesh and shard_map helpers (the only module that knows meshes).
  distributed    jax.distributed for several processes.
  envs           one EnvSpec and Step; gymnax (on device), Gymnasium, EnvPool and Atari
                 envs (host); the episode player.
  agents         the registry and its rules; per agent a config and its pure functions.
  run            the run shell both paths share and every side effect of a run:
                 settings, checkpoints, writers, config.json, SIGTERM, memory check.
  anakin         the on-device acting path: one compiled program, one generic update.
  sebulba        the host acting path: actor threads or Ray actors, parameter server,
                 learner; A3C's parameter server.
  api, policy    make_config/train and load_policy.
  cli            absl flags generated from the configs.
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
