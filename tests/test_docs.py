"""The documentation site: every public name has an API entry, and the guide's code runs as written.

``make docs`` builds the site with warnings as errors (so every entry below must also resolve to a
real object); these tests read the sources, so they run with the rest of the suite in seconds.
"""

import importlib
import pathlib
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
# `.. autofunction:: jrnn.unroll`, `.. autoclass:: ...`, ... inside ```{eval-rst} blocks (autodoc writes
# reStructuredText, which a MyST page must hand to the rST parser); `.. data::` for the registries,
# dicts whose own docstring would be dict's.
DIRECTIVE = re.compile(r"^\.\. (?:auto)?(function|class|data|exception|module):: (\S+)", re.M)


def _documented():
  """Names with an autodoc entry in docs/api/, as ``(kind, dotted name)``."""
  found = set()
  for page in (DOCS / "api").glob("*.md"):
    found |= set(DIRECTIVE.findall(page.read_text()))
  return found


def _public_names():
  """Every public name: ``jrnn.__all__`` and the ``__all__`` of each public submodule, dotted."""
  names, modules, todo = set(), set(), [jrnn]
  while todo:
    module = todo.pop()
    for name in module.__all__:
      value = getattr(module, name)
      if isinstance(value, types.ModuleType):
        modules.add(value.__name__)
        todo.append(value)
      else:
        names.add(f"{module.__name__}.{name}")
  modules.add("jrnn.nnx")  # loaded on first use (it imports Flax), so not in jrnn.__all__
  todo.append(importlib.import_module("jrnn.nnx"))
  names |= {f"jrnn.nnx.{n}" for n in jrnn.nnx.__all__}
  return names, modules


def test_every_public_name_is_in_the_api_reference():
  names, modules = _public_names()
  documented = {name for _, name in _documented()}
  assert len(names) > 80  # the walk found the package, not an empty list
  assert sorted(names - documented) == []
  # Each public submodule's own docstring is shown on its page.
  documented_modules = {name for kind, name in _documented() if kind == "module"}
  assert sorted(modules - documented_modules) == []


def test_the_api_reference_names_only_real_objects():
  for kind, name in _documented():
    module, _, attr = name.rpartition(".")
    obj = importlib.import_module(name) if kind == "module" else getattr(importlib.import_module(module), attr)
    if kind == "function":
      assert callable(obj) and not isinstance(obj, type), name
    elif kind in ("class", "exception"):
      assert isinstance(obj, type), name


def test_every_page_is_in_a_toctree():
  sources = {p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.rglob("*.md") if "_build" not in p.parts}
  sources -= {"index"}
  listed = set()
  for page in DOCS.rglob("*.md"):
    for block in re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), re.S):
      base = page.parent.relative_to(DOCS)
      for line in block.splitlines():
        if line.strip() and not line.startswith(":"):
          listed.add((base / line.strip()).as_posix())
  assert sorted(sources - listed) == []


def _python_blocks(page):
  return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_the_home_page_example_equals_a_loop():
  (code,) = _python_blocks("index.md")
  ns = {}
  exec(compile(code, "docs/index.md", "exec"), ns)
  p, xs = ns["params"], ns["xs"]
  s = jnp.zeros(64)
  c = jnp.zeros(64)
  for t in range(xs.shape[0]):  # the LSTM and the head, one step at a time
    g = xs[t] @ p.cell.wx + s @ p.cell.wh + p.cell.b
    i, f, gg, o = jnp.split(g, 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
    s = jax.nn.sigmoid(o) * jnp.tanh(c)
    np.testing.assert_allclose(ns["ys"][t], s @ p.head.w + p.head.b, rtol=1e-5, atol=1e-6)


@pytest.mark.standard_promotion  # optax.adam
def test_the_getting_started_model_trains_one_step_equal_to_a_loop():
  (code,) = _python_blocks("getting_started.md")
  ns = {}
  exec(compile(code, "docs/getting_started.md", "exec"), ns)
  params = ns["params"]
  key = jax.random.key(1)
  xs = jax.random.normal(key, (3, 7, 8))
  labels = jax.random.randint(key, (3, 7), 0, 4)
  mask = jnp.arange(7)[None] < jnp.array([[7], [4], [1]])
  new_params, _, loss = ns["train_step"](params, ns["optimizer"].init(params), xs, labels, mask)
  # The loss is the mean over sequences of the masked mean cross-entropy of an Elman loop.
  per_seq = []
  for b in range(3):
    s, total = jnp.zeros(32), 0.0
    for t in range(7):
      s = jnp.tanh(xs[b, t] @ params.cell.wx + s @ params.cell.wh + params.cell.b)
      logp = jax.nn.log_softmax(s @ params.head.w + params.head.b)
      total += float(-logp[labels[b, t]]) * float(mask[b, t])
    per_seq.append(total / float(mask[b].sum()))
  np.testing.assert_allclose(float(loss), np.mean(per_seq), rtol=1e-5)
  # Adam's first step moves every weight by about the learning rate.
  step = np.abs(np.asarray(new_params.cell.wx - params.cell.wx))
  assert 0.5e-2 < step.max() <= 1.01e-2
