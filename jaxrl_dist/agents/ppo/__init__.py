"""PPO (Schulman et al. 2017, arXiv 1707.06347) on on-device gymnax environments."""
