"""A2C: synchronous advantage actor-critic (Mnih et al. 2016, arXiv 1602.01783) on device."""
