"""Everything that exists only to make XLA's CPU backend (and a CPU host's start-up) faster.

Nothing here changes what a program computes beyond float rounding. The
modules are reached through one switch, ``jaxrl_dist.tuning``, which applies
them only when the devices a program runs on are CPUs; on GPU and TPU the
programs are the plain ones (``flax.linen.Dense``, ``jax.random.permutation``,
XLA's default compile options).

  matmul           Dense layers whose backward pass feeds XLA:CPU's fast dot kernels.
  shuffle          random permutations of short axes without a sort.
  compile_options  XLA:CPU compiler options and the ``--chunk_compile`` tiers.
  threads          the size of XLA:CPU's intra-op thread pool (``--cpu_threads``).
  deferred_import  gymnax without its plotting imports (process start-up).
  process_exit     ending a finished run without the interpreter's teardown.

The measurements behind each choice are in ``docs/benchmarks/``.
"""
