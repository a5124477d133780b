"""A3C: asynchronous advantage actor-critic (Mnih et al. 2016, arXiv 1602.01783) with
gradient workers on Ray and the learner process as the parameter server."""
