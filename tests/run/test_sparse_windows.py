"""Log windows without a finished episode (``train/episode_return`` NaN, e.g. most of
Freeway-MinAtar's): the console line shows ``-`` instead of ``nan``, and the
learning-curve PNG draws the points that exist (markers when sparse) and the final
greedy eval return, also when no window has a finished episode."""

import math

import numpy as np
import pytest

from jaxrl_dist.run import progress, writers

NAN = float("nan")


def lines_for(records):
    lines = []
    show = progress.console(lines.append, total_env_steps=10**9, every_s=0.0)
    for steps, metrics in records:
        show(steps, metrics)
    return lines


def test_a_window_without_episodes_prints_a_dash_not_nan():
    lines = lines_for([
        (1024, {"sps": 5000.0, "train/episode_return": NAN, "wall_s": 1.0}),
        (2048, {"sps": 5000.0, "train/episode_return": np.float32(NAN), "wall_s": 2.0,
                "policy_lag/mean": NAN}),
        (3072, {"sps": 5000.0, "train/episode_return": 12.5, "wall_s": 3.0}),
    ])
    assert len(lines) == 3
    for line in lines:
        assert "nan" not in line.lower(), line
    assert "| return        - |" in lines[0]
    assert "| return        - |" in lines[1] and "lag - |" in lines[1]
    assert "| return    12.50 |" in lines[2]
    # Same column layout with and without a number.
    assert lines[0].index("| wall") == lines[2].index("| wall")


def test_number_formats_finite_values_and_dashes_the_rest():
    assert progress.number(3.14159) == "    3.14"
    assert progress.number(114235.4, 9, 0) == "   114235"
    for missing in (None, NAN, math.inf, -math.inf, np.float32(NAN), "x"):
        assert progress.number(missing) == "       -"


def mean_line(fig):
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label().startswith("mean of")]
    return line


def eval_point(fig):
    ax = fig.axes[0]
    bars = [c for c in ax.containers if c.get_label().startswith("greedy eval")]
    assert len(bars) == 1, [c.get_label() for c in ax.containers]
    x, y = bars[0].lines[0].get_data()
    return float(np.asarray(x)[0]), float(np.asarray(y)[0])


def test_mostly_nan_curve_draws_the_finite_points_with_markers(tmp_path):
    steps = np.arange(1, 41) * 1000
    returns = np.full((40, 2), np.nan)
    returns[5] = [2.0, np.nan]  # one seed finished an episode there: its value alone
    returns[17] = [4.0, 6.0]
    returns[39] = [np.nan, 10.0]
    series = writers.curve_series(steps, returns)
    np.testing.assert_array_equal(series.steps, [6000, 18000, 40000])
    np.testing.assert_array_equal(series.mean, [2.0, 5.0, 10.0])
    np.testing.assert_array_equal(series.low, [2.0, 4.0, 10.0])
    np.testing.assert_array_equal(series.high, [2.0, 6.0, 10.0])

    fig = writers.learning_curve_figure(steps, returns, "PPO on Freeway-MinAtar",
                                        eval_returns=np.array([7.0, 9.0]))
    line = mean_line(fig)
    x, y = line.get_data()
    np.testing.assert_array_equal(x, [6000, 18000, 40000])
    np.testing.assert_array_equal(y, [2.0, 5.0, 10.0])  # joined, no NaN gaps
    assert line.get_marker() == "o"  # 3 < SPARSE_POINTS points: markers
    assert eval_point(fig) == (40000.0, 8.0)
    assert fig.axes[0].get_xlim()[0] == 0  # the whole run, however few points

    path = writers.plot_learning_curve(str(tmp_path), steps, returns, "t",
                                       eval_returns=np.array([7.0, 9.0]), eval_step=40960)
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_a_dense_curve_has_no_markers():
    steps = np.arange(1, 31) * 10
    fig = writers.learning_curve_figure(steps, np.arange(30.0).reshape(30, 1), "t")
    assert mean_line(fig).get_marker() in (None, "None", "")
    assert not fig.axes[0].containers  # no eval point without eval_returns


def test_all_nan_curve_still_writes_a_png_with_the_eval_point(tmp_path):
    steps = np.arange(1, 11) * 512
    returns = np.full((10, 3), np.nan)
    fig = writers.learning_curve_figure(steps, returns, "t",
                                        eval_returns=np.array([1.0, 2.0, 3.0]))
    assert not [ln for ln in fig.axes[0].lines if ln.get_label().startswith("mean of")]
    assert eval_point(fig) == (5120.0, 2.0)
    path = writers.plot_learning_curve(str(tmp_path), steps, returns, "t",
                                       eval_returns=np.array([1.0, 2.0, 3.0]))
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"
    # No log point at all (nothing recorded) and one float as the eval return.
    empty = writers.plot_learning_curve(str(tmp_path), np.zeros(0), np.zeros((0, 1)), "t",
                                        eval_returns=4.0, eval_step=100)
    with open(empty, "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_returns_of_the_wrong_shape_are_a_value_error():
    with pytest.raises(ValueError, match=r"returns must be \[N, S\]"):
        writers.curve_series(np.arange(3), np.zeros((4, 1)))
