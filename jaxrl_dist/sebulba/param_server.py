"""The parameter server: the learner publishes versioned parameters, actors fetch them.

Version ``v`` is the parameters after ``v`` learner updates (version 0: the
initial ones). Actors either take the newest version before each rollout
(asynchronous, IMPALA/A3C style), or, in deterministic mode, rollout ``r`` of
every actor uses exactly version ``max(r - 1, 0)``: acting on rollout ``r + 1``
overlaps the learner's update ``r``, and the data is the same on every run
(cleanba's reproducibility mechanism). Every wait has a timeout so that no
thread blocks past a stop request.
"""

import threading
from typing import Any


class ParamServer:
    """Thread-safe store of the last ``keep`` published parameter versions.

    Args:
      keep: how many versions to keep (deterministic mode needs 2: while the
        learner has published ``r``, a slow actor may still ask for ``r - 1``).
    """

    def __init__(self, keep: int = 2):
        self._cond = threading.Condition()
        self._versions: dict[int, Any] = {}
        self._latest = -1
        self._keep = keep
        self._closed = False

    def publish(self, version: int, params: Any) -> None:
        """Makes ``params`` version ``version`` (must be newer than the latest)."""
        with self._cond:
            if version <= self._latest:
                raise ValueError(f"version {version} is not newer than {self._latest}")
            self._versions[version] = params
            self._latest = version
            for old in [v for v in self._versions if v <= version - self._keep]:
                del self._versions[old]
            self._cond.notify_all()

    def add(self, version: int, params: Any) -> None:
        """Like ``publish``, for versions that may arrive out of order (a remote actor's
        copy: Ray does not order calls to a threaded actor). An older version is kept if
        it is within the newest ``keep``; a version already held is ignored."""
        with self._cond:
            if version in self._versions or version <= self._latest - self._keep:
                return
            self._versions[version] = params
            self._latest = max(self._latest, version)
            for old in [v for v in self._versions if v <= self._latest - self._keep]:
                del self._versions[old]
            self._cond.notify_all()

    def close(self) -> None:
        """Wakes every waiting actor; later waits return ``None`` at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def latest(self, timeout: float) -> tuple[int, Any] | None:
        """``(version, params)`` of the newest version; ``None`` if none within ``timeout`` s."""
        return self.get(None, timeout)

    def get(self, version: int | None, timeout: float) -> tuple[int, Any] | None:
        """``(version, params)`` for exactly ``version`` (``None``: the newest).

        Waits up to ``timeout`` seconds for it to be published; returns ``None``
        on timeout or after ``close``.

        Raises:
          KeyError: ``version`` was published but is no longer kept.
        """
        with self._cond:
            # An exact version waits until it is here or no longer can be (``add`` may
            # deliver it after a newer one).
            ready = (lambda: self._latest >= 0) if version is None else (
                lambda: version in self._versions or self._latest >= version + self._keep)
            if not self._cond.wait_for(lambda: self._closed or ready(), timeout=timeout) \
                    or self._closed:
                return None
            if version is None:
                return self._latest, self._versions[self._latest]
            if version not in self._versions:
                raise KeyError(f"parameter version {version} is no longer kept")
            return version, self._versions[version]
