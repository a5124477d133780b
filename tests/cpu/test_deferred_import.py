"""gymnax is imported without its renderers' plotting modules (envs/deferred_import.py)."""

import subprocess
import sys
import textwrap

from jaxrl_dist.cpu import deferred_import


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_gymnax_env_import_leaves_plotting_modules_unloaded():
    # A fresh interpreter: this test process may have imported them already.
    out = _run("""
        import sys
        from jaxrl_dist.envs import gymnax_env
        print(gymnax_env.gymnax.make("CartPole-v1")[0].name,
              "seaborn" in sys.modules, "matplotlib.pyplot" in sys.modules,
              "scipy.stats" in sys.modules)
    """)
    assert out == "CartPole-v1 False False False"


def test_stand_in_loads_the_real_module_on_first_use():
    out = _run("""
        import sys
        from jaxrl_dist.envs import gymnax_env
        from gymnax.environments.misc import pong
        palette = pong.sns.color_palette("cubehelix", 3)   # what pong's renderer calls
        import seaborn
        print(len(palette), type(seaborn).__name__, seaborn is sys.modules["seaborn"],
              hasattr(seaborn, "color_palette"))
    """)
    assert out == "3 module True True"


def test_deferred_scope_and_already_imported_modules():
    name = "json.tool"  # small, importable, and not imported by pytest
    sys.modules.pop(name, None)
    with deferred_import.deferred(name, "os"):
        import json.tool as stand_in  # noqa: PLC0415
        import os as real_os  # noqa: PLC0415

        assert type(stand_in).__name__ == "_Deferred"
        assert real_os is sys.modules["os"]  # already imported: untouched
    assert name not in sys.modules  # the stand-in is gone after the block
    assert callable(stand_in.main)  # first use imports the real module
    assert type(sys.modules[name]).__name__ == "module"
