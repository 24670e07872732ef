"""jrnn as a user gets it: the wheel and sdist pass ``twine check``, and the wheel works on its own.

The distributions are built from a copy of the checkout's sources (so that the build writes nothing into
the checkout), with the ``setuptools`` of the running environment (``--no-isolation``: nothing to
download). The wheel is installed, not editable, into a fresh virtual environment (pip fetches jax and the
other dependencies from the package registry or its cache) and run from a directory outside the checkout,
so the ``jrnn`` that answers is the installed one. The install itself is the notebooks' first cell with a
wheel path typed into its form, as a reader does on Colab. Takes about a minute with a warm pip cache.
"""

import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests.test_notebooks import install_cell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("jrnn", "pyproject.toml", "setup.py", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in")

pytestmark = pytest.mark.package


def _run(args, *, cwd, timeout=600):
  """Runs a command; fails the test with its output if it fails."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
  env.update(JAX_PLATFORMS="cpu", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
  proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, (
    f"{' '.join(map(str, args))} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
  )
  return proc.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
  """``(wheel, sdist)`` paths, built as ``python -m build`` does: the sdist, then the wheel from it."""
  tmp = tmp_path_factory.mktemp("build")
  src = tmp / "src"
  src.mkdir()
  for name in SOURCES:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
      shutil.copy2(path, src / name)
  out = tmp / "dist"
  _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)], cwd=tmp)
  (wheel,) = out.glob("jrnn-*.whl")
  (sdist,) = out.glob("jrnn-*.tar.gz")
  return wheel, sdist


def test_wheel_and_sdist_pass_twine_and_hold_the_package_only(dists):
  wheel, sdist = dists
  report = _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], cwd=wheel.parent)
  assert report.count("PASSED") == 2, report
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
  assert "jrnn/py.typed" in names and "jrnn/apps/cli.py" in names and "jrnn/tasks/chars.py" in names
  assert all(re.match(r"jrnn/|jrnn-[^/]+\.dist-info/", n) for n in names), [n for n in names if "jrnn" not in n]
  for folder in ("tests/", "notebooks/", "benchmarks/", "docs/"):
    assert not any(folder in n for n in names), folder
  with zipfile.ZipFile(wheel) as z:
    meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
  assert "Classifier: Typing :: Typed" in meta and "License-Expression: Apache-2.0" in meta
  assert not re.search(r"^Classifier: License ::", meta, re.M)  # the SPDX expression says it
  for extra in ("cuda12", "tpu", "torch", "data", "docs", "dev"):
    assert f"Provides-Extra: {extra}\n" in meta, extra
  with tarfile.open(sdist) as t:
    members = [m.split("/", 1)[1] for m in t.getnames() if "/" in m]
  assert "jrnn/py.typed" in members and "pyproject.toml" in members and "LICENSE" in members
  assert not any(m.startswith(("tests/", "notebooks/", "benchmarks/")) for m in members)


def test_wheel_installs_in_a_fresh_venv_and_runs_outside_the_checkout(dists, tmp_path):
  wheel, _ = dists
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
  python, jrnn_cmd = str(venv / "bin" / "python"), str(venv / "bin" / "jrnn")
  # Installed as a Colab reader would: the notebooks' install cell, with the wheel's path typed in its form.
  cell = tmp_path / "install_cell.py"
  cell.write_text(install_cell(str(wheel)))
  said = _run([python, str(cell)], cwd=tmp_path)
  assert re.fullmatch(r"jrnn \S+ from \S+/site-packages/jrnn\n", said), said

  where = _run(
    [python, "-c", "import jrnn, sysconfig; print(jrnn.__file__); print(sysconfig.get_paths()['purelib'])"],
    cwd=tmp_path,
  )
  module, site = where.split()
  assert module == os.path.join(site, "jrnn", "__init__.py") and site.startswith(str(venv)), where
  assert not module.startswith(ROOT + os.sep)
  assert os.path.isfile(os.path.join(site, "jrnn", "py.typed"))
  # The wheel carries the compiled CPU kernel (setup.py), and it loads with the scipy-openblas32 pip installed.
  loaded = _run([python, "-c", "import jrnn; print(jrnn.cpu_kernel_available())"], cwd=tmp_path)
  assert loaded == "True\n", loaded

  usage = _run([jrnn_cmd, "--help"], cwd=tmp_path)
  assert usage.startswith("usage: jrnn") and all(c in usage for c in ("train", "generate", "bench"))

  # The seeds' "dogs" example: 50 Adam steps take the loss from chance (ln 4) to a fiftieth of it.
  run_dir = tmp_path / "run"
  out = _run(
    [jrnn_cmd, "train", "--task", "dogs", "--steps", "50", "--checkpoint-dir", str(run_dir), "--no-progress"],
    cwd=tmp_path,
  )
  assert f"baseline uniform (ln 4): {math.log(4):.4f}" in out, out
  final = float(re.search(r"^final loss: ([0-9.]+)$", out, re.M).group(1))
  p_s = float(re.search(r"^  p\(s\|dog\): ([0-9.]+)$", out, re.M).group(1))
  assert final < math.log(4) / 50 and p_s > 0.95, out
  assert (run_dir / "step_00000050" / "meta.json").is_file() and (run_dir / "history.json").is_file()
