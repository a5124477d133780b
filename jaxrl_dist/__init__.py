"""jaxrl_dist: distributed reinforcement learning in JAX.

Modules:
  losses        pure, jit-able RL maths (GAE, PPO objectives) on time-major [T, B] arrays.
  envs          on-device gymnax adapter with episode statistics.
  networks      flax policy and value networks.
  distributions categorical and diagonal-Gaussian action distributions.
  parallel      device mesh and shard_map helpers (the only module that knows about meshes).
  agents.ppo    PPO config, learner (one compiled update step) and evaluation.
  training      the host loop: progress, metrics, checkpoints.
"""

__version__ = "0.1.0"
