"""Importing a library without the plotting modules it only needs for rendering.

gymnax 1.0 imports ``matplotlib.pyplot`` and ``seaborn`` (and through it scipy and
pandas) at module level for its ``render`` methods, which training never calls:
about 2.4 s of every process start on a 2-core CPU (``python -X importtime``).
``deferred`` puts stand-ins for such modules in ``sys.modules`` while the library
is imported and removes them afterwards, so the library binds the stand-ins,
each of which imports the real module on its first attribute access (e.g. when
a renderer runs), and every later ``import`` elsewhere gets the real module.
"""

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator


class _Deferred(types.ModuleType):
    """A stand-in for module ``name`` that imports it on first attribute access."""

    def __init__(self, name: str):
        super().__init__(name)
        # The import system reads ``__spec__`` of a module found in sys.modules;
        # setting it here keeps that read from reaching ``__getattr__``.
        self.__spec__ = None

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


@contextlib.contextmanager
def deferred(*names: str) -> Iterator[None]:
    """Within the block, ``import name`` of each not-yet-imported ``names`` binds a stand-in.

    Args:
      names: absolute module names, e.g. ``"seaborn"``, ``"matplotlib.pyplot"``
        (a dotted name's parent package is imported for real).

    Raises:
      Nothing itself; an import error of a deferred module surfaces at its first use.
    """
    placed = {}
    for name in names:
        if name not in sys.modules:
            placed[name] = sys.modules[name] = _Deferred(name)
    try:
        yield
    finally:
        for name, stand_in in placed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
