"""jaxrl_dist: distributed reinforcement learning in JAX.

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
  networks       flax policy, value and Q networks (MLP or CNN torso).
  initializers   orthogonal init without LAPACK (batched LAPACK hangs XLA's CPU pool).
  distributions  categorical, diagonal-Gaussian and ε-greedy action distributions.
  parallel       device mesh and shard_map helpers (the only module that knows meshes).
  distributed    jax.distributed for several processes.
  checkpoint     orbax checkpoints of a run and of its final parameters.
  evaluation     greedy episodes on device or on host envs.
"""

__version__ = "0.1.0"
