"""README's quick start runs as written, and its batched loss equals a loop over sequences."""

import pathlib
import re

import jax
import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_demo_then_test():
  commands = re.findall(r"^make (\w+)", README.read_text(), re.M)
  assert commands[:2] == ["demo", "test"]


@pytest.mark.standard_promotion  # optax.adam
def test_quick_start_runs_and_its_loss_matches_a_loop():
  code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
  ns = {}
  exec(compile(code, str(README), "exec"), ns)
  # Recreate the initial params exactly as the quick start does and loop over the batch.
  k1, k2 = jax.random.split(jax.random.key(0))
  params0 = (ns["cell"].init(k1, 8), ns["head"].init(k2, 64))
  loss_fn = jax.jit(ns["loss_fn"])
  per_seq = [loss_fn(params0, ns["xs"][i], ns["labels"][i], ns["mask"][i]) for i in range(32)]
  np.testing.assert_allclose(float(ns["loss"]), np.mean(per_seq), rtol=1e-5)
  assert not jax.tree_util.tree_all(jax.tree.map(lambda a, b: bool((a == b).all()), ns["params"], params0))
