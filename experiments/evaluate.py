"""Evaluate a trained run's policy: the mean and std of its episode return; watch it.

    python experiments/evaluate.py --workdir=runs/cartpole                 # 10 greedy episodes
    python experiments/evaluate.py --workdir=runs/cartpole --episodes=100 --greedy=false
    python experiments/evaluate.py --workdir=runs/cartpole --seed_index=2   # seed 2 of 3
    python experiments/evaluate.py --workdir=runs/gym-cartpole --video_dir=videos

Loads the run's config.json and final parameters (checkpoint/) with
``jaxrl_dist.policy.load_policy`` and plays --episodes episodes with the greedy action
(--greedy=true, the mode: argmax logits, Gaussian mean, argmax Q) or a draw from the
policy (--greedy=false; Ape-X: ε-greedy, ``policy.apex_epsilon``). A gymnax env plays
all episodes on device in one compiled program (each to its end or the env's time
limit); a Gymnasium env (``gymnasium:<id>``) plays them one after another, episode i
reset with seed --seed + i.

Prints one line (mean ± std over episodes, std with ddof 0, min, max, mean length) and,
last, one JSON line with the same figures, every episode's return and length, and the
videos written (a Gymnasium video holds the reset frame and one per step; a GIF shows
each state acted on, identical consecutive frames merged into one shown as long).

--video_dir=DIR: a Gymnasium env records its first --video_episodes episodes as MP4
files (``gymnasium.wrappers.RecordVideo``; needs moviepy, and the env's renderer: pygame
for classic control: the project's video extra, ``pip install -e ".[video]"``); a gymnax env
that gymnax can draw (classic control, MinAtar, Catch, ...) writes them as animated GIF
files (classic control drawn by Gymnasium's renderer, the others by gymnax's matplotlib
``Visualizer``); any other env prints a one-line note and writes none.

Bad input (flags, a missing or damaged run, a missing video package): one line on
stderr, exit code 2, before anything is compiled.
"""

import json
import os
import sys
import warnings
from typing import NamedTuple

import numpy as np
from absl import app, flags, logging

from jaxrl_dist import cli, errors

flags.DEFINE_string("workdir", None, "The finished run's directory (train.py's --workdir).")
cli.DEFINE_integer("episodes", 10, "Episodes to play.")
cli.DEFINE_integer("seed_index", 0, "Which of an on-device run's --num_seeds seeds (0-based).")
flags.DEFINE_bool("greedy", True, "Greedy actions (the mode); false: sample from the policy.")
cli.DEFINE_integer("seed", 0, "Seed of the evaluation: env resets and sampled actions.")
flags.DEFINE_string("video_dir", None, "Write videos of the first --video_episodes episodes "
                    "here (MP4 for Gymnasium envs, GIF for gymnax envs).")
cli.DEFINE_integer("video_episodes", 1, "Episodes recorded with --video_dir.")
FLAGS = flags.FLAGS

# gymnax 1.0.1's ``visualize.Visualizer`` draws these envs (the classic-control ones
# through Gymnasium's renderer, which needs pygame).
GYMNAX_DRAWABLE = (
    "Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
    "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc",
    "MetaMaze-misc", "FourRooms-misc",
)
GYMNAX_NEEDS_PYGAME = GYMNAX_DRAWABLE[:5]
VIDEO_HINT = 'pip install -e ".[video]"'


class Video(NamedTuple):
    """Where and what to record: ``episodes`` first episodes, files ``prefix-episode-i``."""

    directory: str
    episodes: int
    prefix: str


def check_flags(argv) -> None:
    """Exits 2 with one line on a bad flag value (nothing imported from JAX yet)."""
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}; all options are --flags")
    try:
        cli.check_positive(episodes=FLAGS.episodes, video_episodes=FLAGS.video_episodes)
        if FLAGS.seed_index < 0:
            raise errors.ConfigError(f"--seed_index must be >= 0, got {FLAGS.seed_index}")
        if not 0 <= FLAGS.seed < 2**31:
            raise errors.ConfigError(f"--seed must be in [0, {2**31 - 1}], got {FLAGS.seed}")
        if FLAGS["video_episodes"].present and not FLAGS.video_dir:
            raise errors.ConfigError("--video_episodes applies only with --video_dir=DIR")
        if FLAGS.video_episodes > FLAGS.episodes:
            raise errors.ConfigError(
                f"--video_episodes must be <= --episodes ({FLAGS.episodes}), "
                f"got {FLAGS.video_episodes}"
            )
        if not FLAGS.workdir:
            raise errors.ConfigError(
                "--workdir is required: the directory of a finished run (train.py's --workdir)"
            )
    except errors.ConfigError as e:
        cli.fail(str(e))


def video_plan(pi) -> tuple[Video | None, str | None]:
    """``(what to record, None)``, or ``(None, a one-line note)`` when the env cannot be
    drawn, or ``(None, None)`` without --video_dir.

    Raises:
      ConfigError: --video_dir cannot be created or written, or a package the video
        needs is missing.
    """
    from jaxrl_dist.envs import gymnasium_env

    if not FLAGS.video_dir:
        return None, None
    # Frames are drawn off screen: no display or sound device for pygame (SDL) to probe
    # (each probe prints ALSA / XDG_RUNTIME_DIR errors on a headless machine).
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    env = pi.spec.env
    if gymnasium_env.is_gymnasium(env):
        try:
            import moviepy  # noqa: F401 - what RecordVideo writes MP4 files with
        except ImportError:
            raise errors.ConfigError(
                "--video_dir needs moviepy to write videos of Gymnasium envs "
                f"(the video extra: {VIDEO_HINT})"
            ) from None
        probe = gymnasium_env.make_single(gymnasium_env.gymnasium_id(env))
        modes = list(probe.metadata.get("render_modes", []))
        probe.close()
        if "rgb_array" not in modes:
            return None, (f"note: {env} cannot render rgb_array frames (render modes: "
                          f"{', '.join(modes) or 'none'}); no video written")
    elif env not in GYMNAX_DRAWABLE:
        return None, f"note: gymnax cannot draw {env}; no video written"
    elif env in GYMNAX_NEEDS_PYGAME and not _has_module("pygame"):
        raise errors.ConfigError(
            f"--video_dir: drawing {env} needs pygame (the video extra: {VIDEO_HINT})")
    try:
        os.makedirs(FLAGS.video_dir, exist_ok=True)
    except OSError as e:
        raise errors.ConfigError(
            f"--video_dir={FLAGS.video_dir} cannot be created: {e.strerror or e}") from None
    if not os.access(FLAGS.video_dir, os.W_OK | os.X_OK):
        raise errors.ConfigError(f"--video_dir={FLAGS.video_dir} is not writable")
    prefix = f"{pi.config.agent}-{gymnasium_env.gymnasium_id(env) if ':' in env else env}"
    return Video(FLAGS.video_dir, FLAGS.video_episodes, prefix.replace("/", "-")), None


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def open_gymnasium_env(pi, video: Video | None, first_episode: int = 0):
    """The Gymnasium env to play in, wrapped in ``RecordVideo`` when ``video`` (its
    recordings numbered from ``first_episode`` on); its renderer is tried once
    (ConfigError: a package it needs is missing)."""
    from gymnasium.error import DependencyNotInstalled

    from jaxrl_dist.envs import gymnasium_env

    env_id = gymnasium_env.gymnasium_id(pi.spec.env)
    if video is None:
        return gymnasium_env.make_single(env_id)
    env = gymnasium_env.make_single(env_id, render_mode="rgb_array")
    try:
        env.reset(seed=0)
        env.render()
    except DependencyNotInstalled as e:
        env.close()
        raise errors.ConfigError(
            f"--video_dir: rendering {pi.spec.env} needs a missing package: {e}") from None
    from gymnasium.wrappers import RecordVideo

    with warnings.catch_warnings():  # we made the folder: no "overwriting" warning
        warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
        env = RecordVideo(env, video.directory, episode_trigger=lambda i: i < video.episodes,
                          name_prefix=video.prefix, disable_logger=True)
    env.episode_id = first_episode - 1  # its next reset starts episode ``first_episode``
    return env


def gymnasium_episodes(pi, env, video: Video | None, episodes: int, greedy: bool, seed: int):
    """``(returns [episodes] float64, lengths [episodes] int64)`` played one after another
    in ``env`` (``open_gymnasium_env``'s; closed here) by ``episodes.play_gymnasium``:
    episode ``i`` reset with seed ``seed + i``, at most the env's time limit, or 100 000
    steps without one. An episode an env fault cuts is re-run on a new env
    (``open_gymnasium_env``, recording on from that episode) with a fresh seed."""
    import jax

    from jaxrl_dist.envs import episodes as player

    unused = [env]

    def make_env(episode: int):
        return unused.pop() if unused else open_gymnasium_env(pi, video, episode)

    act = (lambda obs, key: pi.greedy(obs)) if greedy else pi.act
    try:
        return player.play_gymnasium(
            make_env, act, episodes, seed, pi.spec.max_episode_steps, num_envs=1,
            key=None if greedy else jax.random.key(seed), name=pi.spec.env,
            what=f"{'greedy' if greedy else 'sampled'} evaluation")
    finally:
        for left in unused:  # not played (an error before the first episode)
            left.close()


def gymnax_episodes(pi, episodes: int, greedy: bool, seed: int, record: int):
    """Plays ``episodes`` fresh gymnax envs to their first episode's end, on device
    (``episodes.play_gymnax``, one compiled program).

    Returns:
      ``(returns [episodes] float32, lengths [episodes] int32, frames)``; ``frames``
      (``None`` when ``record`` is 0): the first ``record`` envs' ``(env states [T,
      record, ...], finished [T, record] bool, rewards [T, record])`` before each of the
      ``T = max_episode_steps`` steps.
    """
    import jax

    from jaxrl_dist.envs import episodes as player
    from jaxrl_dist.envs import gymnax_env

    env = gymnax_env.GymnaxEnv(pi.spec.env, episodes)
    act = (lambda obs, key: pi.greedy(obs)) if greedy else pi.act

    def play(key):
        reset_key, step_key, act_key = jax.random.split(key, 3)
        return player.play_gymnax(env, act, episodes, reset_key, step_key,
                                  None if greedy else act_key, record)

    return jax.device_get(jax.jit(play)(jax.random.key(seed)))


def write_gifs(pi, frames, video: Video) -> list[str]:
    """One animated GIF per recorded gymnax episode, one frame per state acted on; the
    paths. Classic control: drawn by Gymnasium's renderer at the env's ``render_fps``;
    the others by gymnax's ``Visualizer`` (matplotlib)."""
    import jax

    states, finished, rewards = frames
    paths = []
    for v in range(video.episodes):
        steps = int((~finished[:, v]).sum())  # ``finished`` only turns on
        episode = jax.tree.map(lambda x, v=v: x[:, v], states)
        sequence = [jax.tree.map(lambda x, t=t: x[t], episode) for t in range(steps)]
        path = os.path.join(video.directory, f"{video.prefix}-episode-{v}.gif")
        if pi.spec.env in GYMNAX_NEEDS_PYGAME:
            classic_control_gif(pi.spec.env, sequence, path)
        else:
            import matplotlib

            matplotlib.use("Agg")
            import gymnax
            from gymnax.visualize import Visualizer

            env, env_params = gymnax.make(pi.spec.env)
            Visualizer(env, env_params, sequence, np.cumsum(rewards[:steps, v])).animate(path)
        paths.append(path)
    return paths


def classic_control_gif(env_id: str, sequence: list, path: str) -> None:
    """Writes the gymnax classic-control states ``sequence`` as a GIF at ``path``, each
    drawn by one Gymnasium env of ``env_id`` (gymnax's ``vis_gym`` state mapping; Pillow
    merges identical consecutive frames, adding up their durations)."""
    import gymnasium
    import gymnax
    from gymnax.visualize import vis_gym
    from PIL import Image

    _, env_params = gymnax.make(env_id)
    renderer = gymnasium.make(env_id, render_mode="rgb_array")
    try:
        renderer.reset(seed=0)
        unwrapped = renderer.unwrapped
        vis_gym.set_gym_params(unwrapped, env_id, env_params)
        images = []
        for state in sequence:
            unwrapped.state = vis_gym.get_gym_state(state, env_id)
            if env_id == "Pendulum-v1":
                unwrapped.last_u = np.asarray(state.last_u, np.float64)
            images.append(Image.fromarray(renderer.render()))
        duration = 1000 // renderer.metadata.get("render_fps", 30)
    finally:
        renderer.close()
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)


def play(pi, video: Video | None, env=None):
    """``(returns, lengths, video paths)`` of --episodes episodes of ``pi``, in ``env``
    (``open_gymnasium_env``'s, closed here) for a Gymnasium env."""
    episodes, greedy, seed = FLAGS.episodes, FLAGS.greedy, FLAGS.seed
    if env is not None:  # RecordVideo writes the last recorded episode as env closes
        returns, lengths = gymnasium_episodes(pi, env, video, episodes, greedy, seed)
        paths = [] if video is None else [
            os.path.join(video.directory, f"{video.prefix}-episode-{i}.mp4")
            for i in range(video.episodes)]
        return returns, lengths, [p for p in paths if os.path.exists(p)]
    record = video.episodes if video else 0
    returns, lengths, frames = gymnax_episodes(pi, episodes, greedy, seed, record)
    return returns, lengths, write_gifs(pi, frames, video) if video else []


def report(pi, returns: np.ndarray, lengths: np.ndarray, videos: list[str]) -> dict:
    """Prints the summary line and the JSON line; returns the JSON record."""
    returns = np.asarray(returns, np.float64)
    record = {
        "workdir": pi.workdir, "env": pi.spec.env, "agent": pi.config.agent,
        "seed_index": pi.seed_index, "num_seeds": pi.num_seeds, "greedy": FLAGS.greedy,
        "seed": FLAGS.seed, "episodes": int(returns.size),
        "mean_return": float(returns.mean()), "std_return": float(returns.std()),
        "min_return": float(returns.min()), "max_return": float(returns.max()),
        "mean_length": float(np.mean(lengths)), "returns": returns.tolist(),
        "lengths": np.asarray(lengths).astype(int).tolist(), "videos": videos,
    }
    how = "greedy" if FLAGS.greedy else "sampled"
    print(f"{pi.spec.env}, {pi.config.agent} seed {pi.seed_index} of {pi.num_seeds}, {how}: "
          f"episode return {record['mean_return']:.2f} ± {record['std_return']:.2f} "
          f"(min {record['min_return']:.1f}, max {record['max_return']:.1f}) over "
          f"{record['episodes']} episodes, mean length {record['mean_length']:.1f}")
    for path in videos:
        print(f"wrote {path}")
    print(json.dumps(record), flush=True)
    return record


def main(argv):
    # Before any jax call: jax logs backend probing at INFO.
    logging.set_verbosity(logging.WARNING)
    check_flags(argv)
    from jaxrl_dist import policy as policy_lib
    from jaxrl_dist import tuning
    from jaxrl_dist.envs import gymnasium_env

    try:
        pi = policy_lib.load_policy(FLAGS.workdir, FLAGS.seed_index)
        video, note = video_plan(pi)
        env = None  # made (its renderer tried) before anything compiles
        if gymnasium_env.is_gymnasium(pi.spec.env):
            env = open_gymnasium_env(pi, video)
    except errors.ConfigError as e:
        cli.fail(str(e))
    if note:
        print(note, flush=True)
    returns, lengths, videos = play(pi, video, env)
    report(pi, returns, lengths, videos)
    sys.stdout.flush()
    tuning.exit_process(0)  # on CPU: without the interpreter's teardown


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
