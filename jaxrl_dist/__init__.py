"""jaxrl_dist: distributed reinforcement learning in JAX.

Modules:
  losses        pure, jit-able RL maths (GAE, PPO objectives, V-trace, actor-critic) on
                time-major [T, B] arrays.
  envs          on-device gymnax adapter with episode statistics.
  networks      flax policy and value networks (MLP or CNN torso).
  initializers  orthogonal init without LAPACK (batched LAPACK hangs XLA's CPU pool).
  distributions categorical and diagonal-Gaussian action distributions.
  parallel      device mesh and shard_map helpers (the only module that knows about meshes).
  agents        registry of --agent names; on_device.py, the shared learner.
  agents.ppo    PPO config and learner (one compiled update step).
  agents.a2c    A2C (synchronous A3C): the shared actor-critic update.
  agents.impala IMPALA: V-trace targets and a lagging behaviour policy.
  evaluation    greedy episodes on device.
  training      the host loop: progress, metrics, checkpoints.
"""

__version__ = "0.1.0"
