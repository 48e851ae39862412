"""The package installs both ways: a regular ``pip install .`` and the editable install.

``kernels/`` (device code) must land as ``fastconv.kernels`` with its CUDA C
sources, and ``import fastconv`` must work from outside the repository.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import glob, os, sys
import fastconv, fastconv.kernels
src = fastconv.kernels.SOURCE_DIR
cu = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, '*.cu')))
expect = sorted(os.path.basename(p) for p in glob.glob(os.path.join(sys.argv[1], 'kernels', '*.cu')))
assert cu == expect, (cu, expect)
assert fastconv.backends()[0]['name'] == 'numpy'
print(os.path.dirname(fastconv.__file__), src)
"""


def _run(args, cwd, env=None):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_regular_install_from_outside_the_repository(tmp_path):
    target = tmp_path / "site"
    build = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                  "--no-cache-dir", "--target", str(target), str(ROOT)], cwd=tmp_path)
    if build.returncode != 0 and "No module named" in build.stderr and "setuptools" in build.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(target))
    run = _run([sys.executable, "-c", CHECK, str(ROOT)], cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    pkg, kernels = run.stdout.split()
    assert Path(pkg).is_relative_to(target) and Path(kernels).is_relative_to(target)
    assert (target / "fastconv" / "kernels" / "__init__.py").exists()


def test_installed_package_imports_from_elsewhere(tmp_path):
    """The environment's own install (editable in development and CI) works outside the repo."""
    run = _run([sys.executable, "-c", CHECK, str(ROOT)], cwd=tmp_path,
               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    pkg, kernels = run.stdout.split()
    assert Path(kernels).name == "kernels"


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("fastconv")
    if not exe.exists():
        pytest.skip("fastconv is not installed as a console script in this environment")
    run = _run([str(exe), "--version"], cwd=ROOT)
    assert run.returncode == 0 and "fastconv" in run.stdout
