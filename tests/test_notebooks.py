"""Every notebook is committed with outputs cleared, installs jrnn in its first cell, and runs top to bottom.

The notebooks assert their own numbers against references (hand-written loops, float64
equations, jax.grad); here we execute them with nbclient in fast mode (JRNN_FAST=1:
fewer training steps, every cell still runs), with the install cell's form set to
"installed". The install cell's other choices are tested by running its source with
pip replaced by a recorder.
"""

import importlib.util
import pathlib
import re
import subprocess
import sys

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
DEFAULT = 'JRNN_SOURCE = "checkout"  # @param ["checkout", "installed"] {allow-input: true}'
PIP = [sys.executable, "-m", "pip", "install", "-q"]


def code_cells(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


def install_cell(source="checkout", path=NOTEBOOKS[0]):
  """The first code cell of the notebook at `path`, with the form's field set to `source`."""
  cell = code_cells(nbformat.read(path, as_version=4))[0].source
  assert cell.count(DEFAULT) == 1, f"{path.name}: the first code cell does not hold the install form's field"
  return cell.replace(DEFAULT, f"JRNN_SOURCE = {source!r}")


def test_there_are_notebooks():
  assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_cleared(path):
  nb = nbformat.read(path, as_version=4)
  dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
  assert dirty == [], f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_installs_jrnn(path):
  nb = nbformat.read(path, as_version=4)
  first = code_cells(nb)[0]
  assert first.source.startswith('# @title Install jrnn { display-mode: "form" }\n')
  assert nb.cells.index(first) == 1 and nb.cells[0].cell_type == "markdown"  # only the title comes before it
  # Folded away where the notebook is read rather than run: Colab's form, the docs site's hide-input toggle.
  assert first.metadata.get("cellView") == "form" and "hide-input" in first.metadata.get("tags", [])
  assert first.source == code_cells(nbformat.read(NOTEBOOKS[0], as_version=4))[0].source, (
    f"{path.name}'s install cell differs from {NOTEBOOKS[0].name}'s: the six must be identical"
  )


def test_install_cell_imports_neither_jrnn_nor_jax():
  # Notebook 06 sets XLA_FLAGS in the cell after it, which must happen before JAX starts.
  check = "\nassert not {'jax', 'jrnn'} & set(sys.modules), sorted({'jax', 'jrnn'} & set(sys.modules))"
  subprocess.run([sys.executable, "-c", install_cell("installed") + check], cwd=REPO / "notebooks", check=True)


def test_06_sets_xla_devices_before_jax_is_imported():
  cells = [c.source for c in code_cells(nbformat.read(REPO / "notebooks" / "06_colab_tpu.ipynb", as_version=4))]
  xla = next(i for i, s in enumerate(cells) if "xla_force_host_platform_device_count" in s)
  imports = next(i for i, s in enumerate(cells) if re.search(r"^\s*(import|from) (jax|jrnn)\b", s, re.M))
  assert 0 < xla < imports


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_repository_url_is_hard_coded(path):
  # The repository's public URL is not known: notebooks show only placeholders such as github.com/<you>/<your-copy>.
  text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
  hosts = r"github\.com|gitlab\.com|bitbucket\.org|colab\.research\.google\.com|git\+|git@"
  urls = re.findall(rf"\S*(?:{hosts})\S*|https?://\S*jrnn\S*", text)
  assert [u for u in urls if "<" not in u] == []


class Pip:
  """Stands in for subprocess.check_call and records the commands given to it."""

  def __init__(self):
    self.calls = []

  def __call__(self, cmd, *args, **kwargs):
    self.calls.append(list(cmd))
    return 0


@pytest.fixture
def pip(monkeypatch):
  monkeypatch.setattr(subprocess, "check_call", Pip())
  monkeypatch.setattr(sys, "path", list(sys.path))  # the cell may add a checkout to sys.path
  return subprocess.check_call


def run_install_cell(source):
  exec(compile(install_cell(source), "install cell", "exec"), {"__name__": "__main__"})


def test_install_checkout_already_importable_from_it(pip, monkeypatch, capsys):
  assert pathlib.Path(importlib.util.find_spec("jrnn").origin).parent == REPO / "jrnn"
  monkeypatch.chdir(REPO / "notebooks")
  run_install_cell("checkout")
  assert pip.calls == []
  assert f"from {REPO / 'jrnn'}" in capsys.readouterr().out


def test_install_checkout_pip_installs_it_editable(pip, monkeypatch, tmp_path):
  (tmp_path / "pyproject.toml").write_text('[project]\ndynamic = ["version"]\nname = "jrnn"\n')
  (tmp_path / "notebooks").mkdir()
  monkeypatch.chdir(tmp_path / "notebooks")
  run_install_cell("checkout")
  assert pip.calls == [[*PIP, "-e", str(tmp_path.resolve())]]


def test_install_checkout_of_another_project_is_not_a_checkout(pip, monkeypatch, tmp_path):
  (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n[tool.x]\nname = "jrnn"\n')
  monkeypatch.chdir(tmp_path)
  with pytest.raises(RuntimeError, match="no jrnn checkout"):
    run_install_cell("checkout")
  assert pip.calls == []


def test_install_checkout_outside_a_checkout_says_what_to_type(pip, monkeypatch, tmp_path):
  assert not [d for d in (tmp_path, *tmp_path.parents) if (d / "pyproject.toml").exists()]
  monkeypatch.chdir(tmp_path)
  with pytest.raises(RuntimeError) as error:
    run_install_cell("checkout")
  message = str(error.value)
  assert pip.calls == []
  assert "git+https://github.com/<you>/<your-copy>" in message
  assert "/content/jrnn-0.x-py3-none-any.whl" in message and "python -m build" in message
  assert "!git clone <your copy's URL>" in message
  assert re.findall(r"\S*(?:https?://|github\.com)\S*", message) == ["git+https://github.com/<you>/<your-copy>;"]


@pytest.mark.parametrize(
  "source", ["git+https://github.com/<you>/<your-copy>", "/content/jrnn-0.1.0-py3-none-any.whl", "jrnn[data]"]
)
def test_install_from_a_pip_requirement(pip, monkeypatch, tmp_path, source):
  monkeypatch.chdir(tmp_path)
  run_install_cell(source)
  assert pip.calls == [[*PIP, source]]


def test_install_installed_does_nothing(pip, monkeypatch, tmp_path, capsys):
  monkeypatch.chdir(tmp_path)
  run_install_cell("installed")
  assert pip.calls == []
  import jrnn

  assert capsys.readouterr().out == f"jrnn {jrnn.__version__} from {REPO / 'jrnn'}\n"


def test_install_installed_fails_clearly_when_jrnn_is_missing(pip, monkeypatch, tmp_path):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ModuleNotFoundError, match="jrnn is not importable after JRNN_SOURCE = 'installed'"):
    run_install_cell("installed")
  assert pip.calls == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
  monkeypatch.setenv("JRNN_FAST", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(path, as_version=4)
  code_cells(nb)[0].source = install_cell("installed", path)
  client = nbclient.NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
  )
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert errors == []
  assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")
  printed = "".join(o.get("text", "") for o in code_cells(nb)[0].outputs)
  assert printed.startswith("jrnn ") and f"from {REPO / 'jrnn'}" in printed, printed
