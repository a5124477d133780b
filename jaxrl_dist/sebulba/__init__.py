"""The host acting path ("Sebulba", Hessel et al. 2021, "Podracer architectures").

Actors step Gymnasium/ALE vector envs on the host (threads, or Ray actor processes) and
feed learner devices through bounded queues:

  training      the path the run shell drives (``train_host``; ``HostPath`` and its
                default ``LearnerStep``: one rollout per actor -> compiled ``learn``).
  a3c           A3C's ``LearnerStep``: a parameter server applying gradients in arrival order.
  learner       the agent's compiled ``learn`` on batches from actors.
  actor         actor threads (rollouts, snapshots, env faults).
  param_server  versioned parameters for actors.
  ray_fleet, ray_actor   actor processes on Ray and their learner-side proxies.
  metrics       per-interval timings, policy lag and episode statistics.
  checkpoint    a run's checkpoint with every actor's state.

May import: the rooms below it (``run``, ``agents``, ``envs``, ``nn``, ``losses``,
``replay``, ``parallel``, ``distributed``, ``tuning``, ``cpu``, ``errors``, ``types``);
never ``anakin``.
"""
