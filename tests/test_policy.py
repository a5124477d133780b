"""Trained policies: ``jaxrl_dist.policy.load_policy`` and ``experiments/evaluate.py``.

Real runs make the workdirs: train.py in the background (a solved PPO CartPole, a
2-seed on-device run, a host-actor run on Gymnasium's CartPole), tiny Ape-X and
continuous-action runs in-process. evaluate.py runs as a user runs it.
"""

import json
import os
import shutil
import subprocess

import jax
import numpy as np
import pytest

from jaxrl_dist import agents, errors
from jaxrl_dist import policy as policy_lib
from jaxrl_dist.anakin import training
from jaxrl_dist.run import checkpoint
from tests.cli.test_cli import ROOT, TRAIN, run_script, script_job

EVALUATE = os.path.join(ROOT, "experiments", "evaluate.py")
QUIET = dict(num_devices=1, eval_episodes=2, log_points=2, progress_every_s=1e9)

# Bad inputs of evaluate.py and the message each prints (one line, exit 2). ``RUN``
# stands for a finished 2-seed run's workdir, ``VIDEO`` for a folder that must not
# be created.
EVALUATE_BAD_INPUTS = [
    (["--episodes=0"], "--episodes must be > 0, got 0"),
    (["--workdir=runs/no-such-run"], "--workdir=runs/no-such-run does not exist"),
    ([], "--workdir is required"),
    (["--workdir=RUN", "--seed_index=2", "--video_dir=VIDEO"],
     "--seed_index=2 is out of range: the run in RUN has 2 seed(s) (0 to 1)"),
    (["--workdir=RUN", "--seed_index=-1"], "--seed_index must be >= 0, got -1"),
    (["--workdir=RUN", "--video_episodes=2"], "--video_episodes applies only with --video_dir"),
    (["--workdir=RUN", "--episodes=2", "--video_dir=VIDEO", "--video_episodes=3"],
     "--video_episodes must be <= --episodes (2), got 3"),
    (["--workdir=RUN", "--episodes=ten"], "flag --episodes=ten"),
    (["--workdir=RUN", "extra"], "unexpected arguments 'extra'"),
]


def substitute(args, run, video):
    return [a.replace("RUN", str(run)).replace("VIDEO", str(video)) for a in args]


def background_runs(items, tmp_path_factory):
    """The runs this module's selected tests read (conftest.BackgroundRuns), short ones
    first: the 2-seed run and what reads it, the host-actor run and its video, then the
    solved CartPole run and its evaluation."""
    names = {item.originalname for item in items}
    seeds = tmp_path_factory.mktemp("policy_seeds")
    host = tmp_path_factory.mktemp("policy_host")
    solved = tmp_path_factory.mktemp("policy_solved")
    jobs = []
    if names & {"test_evaluate_bad_input_is_one_line_exit_2", "test_gymnax_gif_per_episode",
                "test_ppo_policy_picks_its_seed_and_acts_as_documented",
                "test_checkpoint_of_another_config_is_refused",
                "test_a_changed_final_checkpoint_is_refused_by_load_policy_and_evaluate",
                "test_a_missing_video_package_names_the_project_s_extra"}:
        jobs.append(script_job(
            "policy/train_seeds", TRAIN, f"--workdir={seeds}", "--num_seeds=2",
            "--total_steps=4096", "--num_envs=8", "--rollout_len=64", "--eval_episodes=2",
            "--log_points=2", "--compilation_cache=", fast=True, workdir=seeds))
    if "test_evaluate_bad_input_is_one_line_exit_2" in names:
        for i, (args, _) in enumerate(EVALUATE_BAD_INPUTS):
            video = tmp_path_factory.mktemp("policy_bad") / "video"
            jobs.append(script_job(("policy/bad", i), EVALUATE,
                                   *substitute(args, seeds, video), timeout=120, fast=True,
                                   run=seeds, video=video))
    if "test_gymnax_gif_per_episode" in names:
        jobs.append(script_job(
            "policy/gif", EVALUATE, f"--workdir={seeds}", "--seed_index=1", "--episodes=3",
            "--greedy=false", f"--video_dir={seeds / 'gifs'}", "--video_episodes=2",
            fast=True, video_dir=seeds / "gifs"))
    if names & {"test_gymnasium_video_per_episode", "test_host_actor_run_has_one_seed"}:
        jobs.append(script_job(
            "policy/train_host", TRAIN, f"--workdir={host}", "--env=gymnasium:CartPole-v1",
            "--total_steps=2048", "--actor_threads=1", "--envs_per_thread=4",
            "--eval_episodes=2", "--compilation_cache=", fast=True, workdir=host))
    if "test_gymnasium_video_per_episode" in names:
        jobs.append(script_job(
            "policy/video", EVALUATE, f"--workdir={host}", "--episodes=3", "--greedy=false",
            f"--video_dir={host / 'videos'}", "--video_episodes=2", fast=True,
            video_dir=host / "videos"))
    if "test_evaluate_solved_cartpole_greedy_return" in names:
        jobs.append(script_job("policy/train_solved", TRAIN, f"--workdir={solved}",
                               "--compilation_cache=", workdir=solved))
        jobs.append(script_job("policy/evaluate_solved", EVALUATE, f"--workdir={solved}",
                               "--episodes=10", fast=True))
    return jobs


def finished(background, key) -> subprocess.CompletedProcess:
    result = background.result(key)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def train_in_process(agent, env, tmp_path, num_seeds=1, **overrides):
    """A tiny real run's workdir, trained here (``training.train``)."""
    config = agents.default_config(agent, env, **overrides)
    settings = training.RunSettings(num_seeds=num_seeds, **QUIET)
    summary = training.train(config, settings, str(tmp_path), log=lambda s: None)
    return summary


# ------------------------------------------------------------------ in-process
def test_load_policy_errors_are_one_line_naming_the_path(tmp_path):
    def message(workdir, **kwargs):
        with pytest.raises(errors.ConfigError) as info:
            policy_lib.load_policy(str(workdir), **kwargs)
        assert "\n" not in str(info.value)
        return str(info.value)

    missing = tmp_path / "missing"
    assert message(missing) == f"--workdir={missing} does not exist (or is not a directory)"
    assert message(tmp_path) == (
        f"--workdir={tmp_path} holds no run ({tmp_path / 'config.json'} is missing)")
    (tmp_path / "config.json").write_text("{not json")
    assert message(tmp_path).startswith(f"{tmp_path / 'config.json'} is damaged (JSONDecodeError")
    (tmp_path / "config.json").write_text(json.dumps({"agent": "ppo"}))
    assert "is damaged (ValueError: no 'env' entry)" in message(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"agent": "ppo", "env": "CartPole-v1"}))
    assert message(tmp_path).startswith(
        f"--workdir={tmp_path} holds no final parameters ({tmp_path / 'checkpoint'} is missing")
    (tmp_path / "checkpoint").mkdir()
    assert message(tmp_path).startswith(f"{tmp_path / 'checkpoint'} cannot be read (")
    (tmp_path / "config.json").write_text(json.dumps({"agent": "sarsa", "env": "CartPole-v1"}))
    assert "names agent 'sarsa', not one of ppo" in message(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"agent": "ppo", "env": "CartPole-v1", "gamma": 1.5}))
    assert message(tmp_path) == (f"{tmp_path / 'config.json'} holds a config that does not "
                                 "build: --gamma must be in [0, 1], got 1.5")


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_apex_policy_is_argmax_q_and_epsilon_greedy(tmp_path):
    summary = train_in_process(
        "apex", "CartPole-v1", tmp_path, num_envs=4, rollout_len=8, total_steps=4 * 8 * 4,
        buffer_capacity=256, batch_size=16, learning_starts=32, hidden_sizes=(32, 32))
    pi = policy_lib.load_policy(str(tmp_path))
    assert (pi.num_seeds, pi.seed_index, pi.config.agent) == (1, 0, "apex")
    assert pi.config.hidden_sizes == (32, 32) and pi.config.buffer_capacity == 256
    assert pi.epsilon == pytest.approx(0.4 ** 8)
    final = jax.tree.map(lambda x: x[0], summary["params"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(pi.params), final)

    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    agent = agents.make_agent(pi.config, pi.spec)
    q = np.asarray(agent.q_values(final, obs))
    greedy = pi.greedy(obs)
    assert greedy.dtype == np.int32 and greedy.shape == (64,)
    np.testing.assert_array_equal(greedy, q.argmax(-1))
    many = np.repeat(obs[:1], 20_000, axis=0)
    sampled = np.asarray(pi.act(many, jax.random.key(1)))
    assert sampled.dtype == np.int32 and sampled.shape == (20_000,)
    # ε-greedy: a uniform action with probability ε (ε/2 of them not the greedy one).
    off = np.mean(sampled != q[0].argmax())
    sigma = np.sqrt(pi.epsilon / 2 / 20_000)
    assert abs(off - pi.epsilon / 2) < 5 * sigma + 1e-4, off


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_continuous_policy_actions_are_float32_and_clipped(tmp_path):
    summary = train_in_process("a2c", "Pendulum-v1", tmp_path, num_envs=4, rollout_len=8,
                               total_steps=4 * 8 * 3)
    pi = policy_lib.load_policy(str(tmp_path))
    assert pi.spec.action_dim == 1 and not pi.spec.discrete and pi.epsilon is None
    final = jax.tree.map(lambda x: x[0], summary["params"])
    obs = np.random.default_rng(0).normal(size=(3, 5, 3)).astype(np.float32) * 5
    mean = np.asarray(agents.make_agent(pi.config, pi.spec).policy(final, obs).mean)
    greedy = pi.greedy(obs)
    assert greedy.dtype == np.float32 and greedy.shape == (3, 5, 1)
    np.testing.assert_allclose(greedy, np.clip(mean, -2.0, 2.0), rtol=1e-6, atol=1e-6)
    # log_std 0 after 3 tiny updates: std ~1, so of 4000 draws some leave [-2, 2].
    draws = pi.act(np.zeros((4000, 3), np.float32), jax.random.key(0))
    assert draws.dtype == np.float32 and draws.shape == (4000, 1)
    assert draws.min() >= -2.0 and draws.max() <= 2.0
    assert np.mean(np.abs(draws) == 2.0) > 0.01
    single = pi.greedy(obs[0, 0])
    assert single.shape == (1,) and single.dtype == np.float32
    with pytest.raises(ValueError, match=r"obs must be \[\*batch, 3\] for Pendulum-v1"):
        pi.greedy(np.zeros((5, 4), np.float32))


# -------------------------------------------------- reading background runs
@pytest.mark.parametrize(("args", "message"), EVALUATE_BAD_INPUTS)
def test_evaluate_bad_input_is_one_line_exit_2(background, args, message):
    finished(background, "policy/train_seeds")
    key = ("policy/bad", EVALUATE_BAD_INPUTS.index((args, message)))
    result, job = background.result(key), background.job(key)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    expected = substitute([message], job["run"], job["video"])[0]
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert result.stdout == ""
    assert not job["video"].exists()


def test_ppo_policy_picks_its_seed_and_acts_as_documented(background):
    workdir = background.job("policy/train_seeds")["workdir"]
    finished(background, "policy/train_seeds")
    saved = checkpoint.load_params(str(workdir / "checkpoint"))
    pis = [policy_lib.load_policy(str(workdir), seed=i) for i in (0, 1)]
    for i, pi in enumerate(pis):
        assert (pi.num_seeds, pi.seed_index) == (2, i)
        jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a, b[i]),
                     jax.device_get(pi.params), saved)
    pi = pis[1]
    assert (pi.spec.env, pi.spec.obs_shape, pi.spec.action_dim, pi.spec.discrete,
            pi.spec.max_episode_steps) == ("CartPole-v1", (4,), 2, True, 500)
    assert type(pi.spec.action_space).__name__ == "Discrete"
    assert pi.config == agents.default_config(
        "ppo", "CartPole-v1", num_envs=8, rollout_len=64, total_steps=4096)

    obs = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    logits = np.asarray(agents.make_agent(pi.config, pi.spec).policy(pi.params, obs))
    for batch in (obs, obs[0], obs[0, 0]):
        action = pi.greedy(batch)
        assert action.dtype == np.int32 and action.shape == batch.shape[:-1]
        sampled = pi.act(batch, jax.random.key(0))
        assert sampled.dtype == np.int32 and sampled.shape == batch.shape[:-1]
    np.testing.assert_array_equal(pi.greedy(obs), logits.argmax(-1))
    assert pi.greedy(obs.astype(np.float64)).dtype == np.int32  # other dtypes are cast
    # Sampling draws from softmax(logits): action frequencies within 5 sigma.
    n = 20_000
    draws = np.asarray(pi.act(np.repeat(obs[:1, 0], n, axis=0), jax.random.key(3)))
    p = np.exp(logits[0, 0] - logits[0, 0].max())
    p /= p.sum()
    assert abs(np.mean(draws == 1) - p[1]) < 5 * np.sqrt(p[0] * p[1] / n)


def test_checkpoint_of_another_config_is_refused(background, tmp_path):
    workdir = background.job("policy/train_seeds")["workdir"]
    finished(background, "policy/train_seeds")
    shutil.copytree(workdir / "checkpoint", tmp_path / "checkpoint")
    record = json.loads((workdir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(record, hidden_sizes=[32, 32])))
    with pytest.raises(errors.ConfigError) as info:
        policy_lib.load_policy(str(tmp_path))
    assert str(info.value).startswith(
        f"{tmp_path / 'checkpoint'} does not hold the parameters of config.json's --agent=ppo "
        "on --env=CartPole-v1 (expected ")


def test_a_changed_final_checkpoint_is_refused_by_load_policy_and_evaluate(background,
                                                                            tmp_path):
    """One bit of one parameter changed (re-saved, so the files are sound): the digest
    differs from the run's recorded ``params_sha256``; one line, evaluate.py exits 2."""
    workdir = background.job("policy/train_seeds")["workdir"]
    finished(background, "policy/train_seeds")
    changed = tmp_path / "run"
    shutil.copytree(workdir, changed, ignore=shutil.ignore_patterns("checkpoints"))
    policy_lib.load_policy(str(changed))  # the copy as it was: accepted
    params = checkpoint.load_params(str(changed / "checkpoint"))
    leaf = jax.tree.leaves(params)[0]
    leaf.view(np.uint32).flat[0] ^= 1  # the lowest mantissa bit of one float32
    checkpoint.save_params(str(changed / "checkpoint"), params)
    recorded = json.loads((changed / "metrics.jsonl").read_text().splitlines()[-1])
    expected = (f"{changed / 'checkpoint'} does not hold the run's final parameters: their "
                f"SHA-256 is {checkpoint.params_sha256(params)[:16]}..., "
                f"{changed / 'metrics.jsonl'} records {recorded['params_sha256'][:16]}...")
    with pytest.raises(errors.ConfigError) as info:
        policy_lib.load_policy(str(changed))
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    result = run_script(EVALUATE, f"--workdir={changed}", "--episodes=1", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: " + expected), result.stderr
    assert result.stdout == ""


def test_a_missing_video_package_names_the_project_s_extra(background, tmp_path):
    """README's Quickstart watch command on an install without pygame: one line naming
    ``.[video]``, exit 2, no folder made."""
    workdir = background.job("policy/train_seeds")["workdir"]
    finished(background, "policy/train_seeds")
    video = tmp_path / "videos"
    without_pygame = ("import runpy, sys; sys.modules['pygame'] = None; "
                      "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    result = run_script("-c", without_pygame, EVALUATE, f"--workdir={workdir}",
                        f"--video_dir={video}", timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        'error: --video_dir: drawing CartPole-v1 needs pygame (the video extra: '
        'pip install -e ".[video]")']
    assert not video.exists()


def test_gymnax_gif_per_episode(background):
    from PIL import Image

    result = finished(background, "policy/gif")
    video_dir = background.job("policy/gif")["video_dir"]
    record = last_json(result)
    assert (record["episodes"], record["seed_index"], record["greedy"]) == (3, 1, False)
    paths = [str(video_dir / f"ppo-CartPole-v1-episode-{i}.gif") for i in range(2)]
    assert record["videos"] == paths
    assert sorted(os.listdir(video_dir)) == sorted(os.path.basename(p) for p in paths)
    for path, length in zip(paths, record["lengths"], strict=False):
        with Image.open(path) as gif:
            assert gif.format == "GIF" and gif.size == (600, 400)  # Gymnasium's CartPole
            durations = []
            for i in range(gif.n_frames):
                gif.seek(i)
                durations.append(gif.info["duration"])
        # One 20 ms frame (CartPole's 50 fps) per state acted on; Pillow merges identical
        # consecutive frames, adding up their durations.
        assert sum(durations) == 20 * length and gif.n_frames <= length
        assert gif.n_frames >= length // 2, (gif.n_frames, length)
    assert record["returns"] == [float(n) for n in record["lengths"]]  # CartPole: 1 a step


def test_host_actor_run_has_one_seed(background):
    workdir = background.job("policy/train_host")["workdir"]
    finished(background, "policy/train_host")
    pi = policy_lib.load_policy(str(workdir))
    assert (pi.num_seeds, pi.spec.env, pi.spec.max_episode_steps) == (
        1, "gymnasium:CartPole-v1", 500)
    assert pi.config.num_envs == 4  # from the actor layout, as trained
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(pi.params),
                 checkpoint.load_params(str(workdir / "checkpoint")))
    obs = np.zeros((7, 4), np.float32)
    assert pi.greedy(obs).shape == (7,) and pi.act(obs, jax.random.key(0)).dtype == np.int32
    with pytest.raises(errors.ConfigError) as info:
        policy_lib.load_policy(str(workdir), seed=1)
    assert str(info.value) == (
        f"--seed_index=1 is out of range: the run in {workdir} has 1 seed(s) (0 to 0)")


def test_gymnasium_video_per_episode(background):
    import imageio_ffmpeg

    result = finished(background, "policy/video")
    video_dir = background.job("policy/video")["video_dir"]
    record = last_json(result)
    assert record["env"] == "gymnasium:CartPole-v1" and record["episodes"] == 3
    paths = [str(video_dir / f"ppo-CartPole-v1-episode-{i}.mp4") for i in range(2)]
    assert record["videos"] == paths
    assert sorted(os.listdir(video_dir)) == sorted(os.path.basename(p) for p in paths)
    for path, length in zip(paths, record["lengths"], strict=False):
        with open(path, "rb") as f:
            assert f.read(12)[4:8] == b"ftyp"  # an MP4 container
        frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
        assert frames == length + 1  # the reset frame and one per step
    assert f"wrote {paths[0]}" in result.stdout


def test_evaluate_solved_cartpole_greedy_return(background):
    workdir = background.job("policy/train_solved")["workdir"]
    finished(background, "policy/train_solved")
    result = finished(background, "policy/evaluate_solved")
    record = last_json(result)
    assert (record["episodes"], record["greedy"], record["agent"]) == (10, True, "ppo")
    assert record["workdir"] == str(workdir) and record["num_seeds"] == 1
    assert len(record["returns"]) == 10
    assert record["mean_return"] >= 475, record["returns"]
    assert record["mean_return"] == pytest.approx(np.mean(record["returns"]))
    assert record["std_return"] == pytest.approx(np.std(record["returns"]))
    line = result.stdout.strip().splitlines()[-2]
    assert line.startswith("CartPole-v1, ppo seed 0 of 1, greedy: episode return ")
    assert f"{record['mean_return']:.2f} ± {record['std_return']:.2f}" in line
