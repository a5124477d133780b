"""The on-device acting path ("Anakin", Hessel et al. 2021, "Podracer architectures").

JAX environments are vmapped and scanned inside the compiled update, beside the learner:

  training   the path the run shell drives (``train``; ``OnDevicePath``).
  on_device  the compiled program: an agent's pure functions, one generic update,
             the sharded state, ``K`` updates scanned per host call.
  rollout    ``lax.scan`` over time of a batched gymnax env.

May import: the rooms below it (``run``, ``agents``, ``envs``, ``nn``, ``losses``,
``replay``, ``parallel``, ``tuning``, ``cpu``, ``errors``, ``types``); never ``sebulba``.
"""
