"""Test setup: 4 virtual CPU devices for the mesh tests (set before jax is imported);
``fast_compile`` for compile-bound tests; long subprocess runs started in the background,
or, under pytest-xdist (``-n``, the default: ``pyproject.toml``), run by the test that
first asks for them, each worker using its own core.
"""

import inspect
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _session_compilation_cache() -> str:
    """The session's directory of JAX's persistent compilation cache: one for the pytest
    process and its xdist workers (whose parent it is), new for each session."""
    controller = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
    return os.path.join(tempfile.gettempdir(), f"jaxrl_dist_tests_xla_{controller}")


# One persistent compilation cache for the session: the in-process tests, every xdist
# worker and every process a test starts (they inherit the environment; a run's own
# --compilation_cache=DIR replaces it). A program that several tests build alike (one
# learner in two modules, a run and its resume, two processes of one mesh) compiles
# once; what it computes is unchanged. A fresh clone's session starts it empty.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _session_compilation_cache())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@pytest.fixture
def fast_compile():
    """XLA's backend optimizations off (``jax_disable_most_optimizations``) for a test.

    For compile-bound tests (opt in: ``pytestmark = pytest.mark.usefixtures(
    "fast_compile")``): each compiles a few learner programs (5-12 s each on a 2-core
    CPU with the optimizations) and runs them for a handful of tiny updates. Compiling
    takes about half as long; what the programs compute is unchanged, only their machine
    code is less optimized. Learning runs (host-actor and CLI) keep the optimizations,
    and so does every subprocess (this is a jax config value, not an environment one).
    """
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


class BackgroundRuns:
    """Subprocess runs made one after another in a background thread.

    A test module declares its runs with a module-level function
    ``background_runs(items, tmp_path_factory) -> [job, ...]`` (``items``: its selected
    tests); a job is a dict with ``key``, ``argv``, ``env``, ``cwd`` and optionally
    ``timeout`` (s, default 600), ``input`` (stdin text) and anything else the test wants
    back from ``job(key)``. Every selected module's jobs are queued when the session
    starts, in collection order, and ``result(key)`` waits for one.

    Why: the in-process tests are compile-bound and keep about one of the cores busy; a
    learning run or a CLI run in a fresh process (jax import, compile, train) uses the
    other one meanwhile instead of adding its time to the suite's.

    ``lazy``: no background thread; ``result(key)`` runs job ``key`` in the calling test
    (once; later calls get the same result). Under pytest-xdist every worker collects
    every module but runs only its share, and the workers already keep every core busy.
    """

    def __init__(self, jobs, lazy: bool = False):
        self._jobs = {job["key"]: job for job in jobs}
        assert len(self._jobs) == len(jobs), "two background jobs with one key"
        self._futures = {key: Future() for key in self._jobs}
        self._proc = None
        self._stopped = False
        self._lazy = lazy
        self._thread = None
        if not lazy:
            self._thread = threading.Thread(target=self._work, name="background-runs",
                                            daemon=True)
            self._thread.start()

    def _work(self):
        for key in self._jobs:
            if self._stopped:
                self._futures[key].cancel()
                continue
            self._run(key)

    def _run(self, key):
        job, future = self._jobs[key], self._futures[key]
        try:
            proc = subprocess.Popen(
                job["argv"], env=job["env"], cwd=job["cwd"], text=True,
                stdin=subprocess.PIPE if job.get("input") is not None else None,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            self._proc = proc
            try:
                out, err = proc.communicate(job.get("input"), timeout=job.get("timeout", 600))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            future.set_result(subprocess.CompletedProcess(job["argv"], proc.returncode,
                                                          out, err))
        except BaseException as e:  # noqa: BLE001 - re-raised in the test that asks
            future.set_exception(e)

    def job(self, key):
        return self._jobs[key]

    def result(self, key) -> subprocess.CompletedProcess:
        """The finished run of job ``key`` (waits for it; ``lazy``: runs it first)."""
        future = self._futures[key]
        if self._lazy and not future.done():
            self._run(key)
        return future.result()

    def stop(self):
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=60)


# The longest modules (with the runs their tests ask for), measured with --durations:
# under pytest-xdist they start first, so no worker is left with one of them at the end.
LONGEST_FIRST = (
    "sebulba/test_ray_actors.py", "distributed/test_multiprocess_faults.py",
    "anakin/test_resume.py", "agents/test_actor_critic_learners.py",
    "sebulba/test_host_actors.py", "test_policy.py", "cpu/test_cpu_threads.py",
    "nn/test_torsos.py", "distributed/test_multihost.py", "cli/test_cli.py",
)


def pytest_collection_modifyitems(session, config, items):
    """Tests that wait for a background run go last (in their order): every other test
    runs on one core while the background runs use the other, instead of the suite
    stopping half-way to wait for them. Under pytest-xdist (one module per worker at a
    time) they go last within their module, and ``LONGEST_FIRST``'s modules go first."""
    def waits(item):  # asks for the (autouse) fixture by name: it reads a result
        function = getattr(item, "function", None)
        return function is not None and "background" in inspect.signature(function).parameters

    if not hasattr(config, "workerinput"):
        items.sort(key=waits)
        return

    def module_rank(item):
        path = item.path.relative_to(config.rootpath / "tests").as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    order = {item.path: i for i, item in enumerate(items)}  # first appearance per module
    for i, item in reversed(list(enumerate(items))):
        order[item.path] = i
    items.sort(key=lambda item: (module_rank(item), order[item.path], waits(item)))


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory):
    """The session's ``BackgroundRuns`` (see there)."""
    jobs, modules = [], {}
    for item in request.session.items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "background_runs"):
            modules.setdefault(module, []).append(item)
    for module, items in modules.items():
        jobs += module.background_runs(items, tmp_path_factory)
    runs = BackgroundRuns(jobs, lazy=hasattr(request.config, "workerinput"))
    yield runs
    runs.stop()


def pytest_unconfigure(config):
    """The session's compilation cache goes with the session (on the pytest process)."""
    if not hasattr(config, "workerinput"):
        shutil.rmtree(_session_compilation_cache(), ignore_errors=True)
