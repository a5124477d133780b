"""Atari 2600 games (the Arcade Learning Environment) with the DQN-era preprocessing.

``--env=gymnasium:ALE/<Game>-v5`` builds ale-py's Gymnasium env and applies
Gymnasium's own wrappers, as Mnih et al. 2015 (Nature 518, Methods, "Preprocessing")
and Machado et al. 2018 (JAIR 61, "Revisiting the ALE", sticky actions) describe:

- ``AtariPreprocessing``: up to 30 no-op actions at reset, each action repeated for
  4 frames with the max over the last two frames (flicker), 84×84 grayscale, uint8;
  optionally ``terminated`` on the loss of a life (``terminal_on_life_loss``;
  Gymnasium's wrapper then resets the whole game at the next reset);
- v5's sticky actions (the previous action is repeated with probability 0.25) and
  its 108,000-frame (27,000-step) episode limit, kept as the v5 id defines them;
- ``FrameStackObservation``: the last 4 frames, padded at reset with the reset frame;
- the stack moved to the last axis: observations are uint8 ``[84, 84, 4]``
  (height, width, frames; ``obs[..., -1]`` is the newest frame), the layout of the
  convolutional torsos (``networks``) and of the frame-deduplicated replay.

The base env is made with ``frameskip=1`` (the preprocessing skips frames itself), so
one env step is 4 emulator frames: ``env_steps`` count agent steps, frames = 4 × steps.
Rewards are the game's own; agents that clip them do it in the learner
(``reward_clip``), so logged episode returns are the game's scores.
"""

import gymnasium
import numpy as np

PREFIX = "ALE/"
FRAME_SKIP = 4
SCREEN_SIZE = 84
STACK = 4
NOOP_MAX = 30


def is_atari(env_id: str) -> bool:
    """Whether a Gymnasium id (no ``gymnasium:`` prefix) names an ALE game."""
    return env_id.startswith(PREFIX)


def register() -> None:
    """Registers ale-py's ``ALE/*`` ids with Gymnasium (they ship with ale-py), with
    ALE's logging at its Error level (its banner and notes are not printed).

    Raises:
      ModuleNotFoundError: ale-py is not installed (``pip install -e ".[atari]"``).
    """
    import ale_py

    # ALE's own log at its Error level: no version banner on stderr before a run's lines.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gymnasium.register_envs(ale_py)


def game_ids() -> list[str]:
    """Every ``ALE/<Game>-v5`` id (after ``register``)."""
    return sorted(i for i in gymnasium.registry if is_atari(i) and i.endswith("-v5"))


def make(env_id: str, terminal_on_life_loss: bool = False, **kwargs) -> gymnasium.Env:
    """One preprocessed ALE env: observations uint8 ``[84, 84, 4]``, Discrete actions.

    Args:
      env_id: ``ALE/<Game>-v5`` (any ale-py id).
      terminal_on_life_loss: end an episode (``terminated``) when a life is lost.
      **kwargs: passed to ``gymnasium.make`` (e.g. ``render_mode``).

    Raises:
      ModuleNotFoundError: ale-py is not installed.
      gymnasium.error.Error: the id is not an ALE game.
    """
    register()
    env = gymnasium.make(env_id, frameskip=1, **kwargs)
    env = gymnasium.wrappers.AtariPreprocessing(
        env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
        terminal_on_life_loss=terminal_on_life_loss, grayscale_obs=True, scale_obs=False,
    )
    env = gymnasium.wrappers.FrameStackObservation(env, STACK)
    return channels_last(env)


def channels_last(env: gymnasium.Env) -> gymnasium.Env:
    """Moves a frame stack ``[S, H, W]`` to ``[H, W, S]`` (uint8, same bounds)."""
    space = env.observation_space
    stacked = gymnasium.spaces.Box(
        np.moveaxis(space.low, 0, -1), np.moveaxis(space.high, 0, -1), dtype=space.dtype
    )
    return gymnasium.wrappers.TransformObservation(env, _move_stack_last, stacked)


def _move_stack_last(obs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(np.asarray(obs), 0, -1))
