"""`pip install bindings/python` works offline and has no dependency."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import BUILD, PKG_ROOT


def test_pip_install_offline(tmp_path):
    import importlib.util
    if not (importlib.util.find_spec("pip") and importlib.util.find_spec("setuptools")):
        pytest.skip("pip or setuptools missing")
    target = tmp_path / "site"
    # setuptools writes build/ and *.egg-info beside pyproject.toml: install
    # from a copy so that the source tree stays clean.
    src = tmp_path / "src"
    shutil.copytree(PKG_ROOT, str(src), ignore=shutil.ignore_patterns("tests", "__pycache__", "build",
                                                                      "*.egg-info"))
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                        "--target", str(target), str(src)], capture_output=True, text=True, env=env, timeout=300,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "refit" / "__init__.py").is_file()
    # The installed copy is outside the source tree: it finds librefit
    # through REFIT_LIBRARY and the plugins next to that build's core/.
    env = {k: v for k, v in os.environ.items() if k not in ("REFIT_PLUGIN_PATH", "REFIT_BUILD_ROOT")}
    env.update(PYTHONPATH=str(target), REFIT_LIBRARY=os.path.join(BUILD, "core", "librefit.so"))
    code = ("import refit, os; assert refit.__file__.startswith(%r), refit.__file__; "
            "print(refit.library_path()); print(os.environ.get('REFIT_PLUGIN_PATH', ''))" % str(target))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "plugins/store/file" in r.stdout
