"""Settings of a run that are not hyperparameters of the agent, and the run's cadence."""

import dataclasses
import math

from jaxrl_dist import errors

# Default checkpoints are at least this many env steps (per seed) apart: each save
# blocks the run, and this is a few seconds of training even on a small CPU, which is
# all a crash can then lose (docs/benchmarks/cpu_tuning.md).
MIN_DEFAULT_CHECKPOINT_STEPS = 500_000
# ``resume`` continues the run in a given workdir; ``overwrite`` replaces one.
RESUME_NEEDS_WORKDIR = (
    "--resume needs the run's --workdir and cannot be combined with --overwrite"
)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Settings of a run that are not hyperparameters of the agent.

    ``seed``: the run's seed (seed ``i`` of ``num_seeds`` vmapped runs uses
    ``fold_in(seed, i)``). ``num_devices``: devices of the data-parallel mesh
    (``None``: every device of every process). ``eval_episodes``: greedy episodes per
    seed at the end. ``log_points``: at least this many metrics.jsonl lines (when
    there are enough updates). ``progress_every_s``: seconds between console
    progress lines. ``checkpoint_every``: updates between whole-run checkpoints in
    ``<workdir>/checkpoints/`` (``None``: about every tenth of the run, but at least
    ``MIN_DEFAULT_CHECKPOINT_STEPS`` env steps apart); one is also written at the end
    and, on device, when the run is interrupted. ``resume``: continue from the latest
    checkpoint in the workdir. ``overwrite``: a workdir that already holds a run has its
    outputs removed first (without it such a workdir is refused). ``wandb_project``:
    also log to Weights & Biases.
    ``chunk_compile``: CPU only, how the on-device training chunk compiles
    (``cpu.compile_options.CHUNK_TIERS``); not part of the run's identity.
    ``eval_every``: env steps per seed between greedy evaluations during training
    (``eval_episodes`` per seed, at the first log point at or after each multiple, and
    at the last log point; see ``eval_due``); 0: only the final one. Not part of the
    run's identity (it changes what is logged, not what is trained).
    """

    seed: int = 0
    num_seeds: int = 1
    num_devices: int | None = None
    eval_episodes: int = 32
    log_points: int = 20
    progress_every_s: float = 2.0
    checkpoint_every: int | None = None
    resume: bool = False
    overwrite: bool = False
    wandb_project: str | None = None
    chunk_compile: str = "auto"
    eval_every: int = 0

    def check(self) -> "RunSettings":
        """Returns self.

        Raises:
          ConfigError: ``checkpoint_every`` < 1, ``eval_every`` not an integer >= 0, or
            both ``resume`` and ``overwrite`` (one line naming the flag).
        """
        if self.resume and self.overwrite:
            raise errors.ConfigError(RESUME_NEEDS_WORKDIR)
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise errors.ConfigError(
                f"--checkpoint_every must be >= 1 update, got {self.checkpoint_every}"
            )
        every = self.eval_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise errors.ConfigError(f"--eval_every must be an integer >= 0, got {every!r}")
        return self

    def eval_due(self, steps_before: int, steps: int, total_steps: int) -> bool:
        """Whether the log point at ``steps`` env steps per seed (the previous one at
        ``steps_before``) evaluates the greedy policy: ``eval_every`` > 0 and a multiple of
        it lies in ``(steps_before, steps]``, or ``steps`` is the run's last log point
        (``>= total_steps``; that evaluation is also the run's final one)."""
        every = self.eval_every
        return every > 0 and (steps // every > steps_before // every or steps >= total_steps)


def chunk_size(num_updates: int, log_points: int, divides: tuple[int, ...] = ()) -> int:
    """Largest divisor of ``num_updates`` (and of every ``divides``) giving >= ``log_points``
    chunks."""
    target = max(1, num_updates // max(1, log_points))
    return max(
        d for d in range(1, target + 1)
        if num_updates % d == 0 and all(n % d == 0 for n in divides)
    )


def checkpoint_period(
    num_updates: int, chunk: int, checkpoint_every: int | None, steps_per_update: int = 1
) -> int:
    """Updates between checkpoints: ``checkpoint_every``, or about a tenth of the run but
    at least ``MIN_DEFAULT_CHECKPOINT_STEPS`` env steps (``steps_per_update`` per update);
    a multiple of ``chunk``. A period past ``num_updates`` leaves the final checkpoint only.
    """
    if checkpoint_every is not None:
        return checkpoint_every
    tenth = math.ceil(num_updates / 10 / chunk)
    floor = math.ceil(MIN_DEFAULT_CHECKPOINT_STEPS / max(1, steps_per_update) / chunk)
    return chunk * max(1, tenth, floor)
