"""IMPALA: actor-critic with V-trace (Espeholt et al. 2018, arXiv 1802.01561) on device."""
