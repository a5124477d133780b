"""Experience replay on device: a sum-tree and a proportional prioritized buffer (pure pytrees)."""
