"""Every task learns: the evaluation metric falls within a small step budget; the LSTM solves adding."""

import math
import sys

import jax
import numpy as np
import optax
import pytest

from jrnn import _options
from jrnn import train
from jrnn.apps import experiments

pytestmark = pytest.mark.standard_promotion  # optax's Adam is not strict-promotion clean

TINY = {
  "dogs": dict(hidden=3, batch=1, seq_len=3, lr=0.05),
  "copy": dict(hidden=16, batch=16, seq_len=3, lr=0.01),
  "chars": dict(hidden=32, batch=8, seq_len=16, lr=0.01),
  "sunspots": dict(hidden=8, batch=16, seq_len=10, lr=0.01),
  "dates": dict(hidden=16, batch=32, lr=0.01),
  "reverse": dict(hidden=16, batch=32, seq_len=5, lr=0.01, attention="dot"),
  "words": dict(hidden=16, batch=4, seq_len=8, lr=0.01, train_tokens=4000, eval_tokens=2000),
}


def _train(config, steps, key=None):
  key = jax.random.key(0) if key is None else key
  config = experiments.resolve(dict(config, steps=steps))
  k_init, k_data = jax.random.split(key)
  exp = experiments.build(config, k_data)
  params = exp.init(k_init)
  opt = optax.adam(config["lr"])
  stateful = exp.initial_carry is not None
  options = dict(clip_norm=config["clip_norm"], has_aux=stateful, has_rng=exp.key is not None)
  step = jax.jit(train.make_step(exp.loss_fn, opt, **options))
  return exp, params, opt, step, (exp.initial_carry(params) if stateful else None)


# adding is left out here: test_lstm_solves_the_adding_problem_at_t30 asks much more of it.
@pytest.mark.parametrize("task", [t for t in experiments.TASKS if t != "adding"])
def test_metric_falls_on_every_task(task):
  if task == "sunspots":
    pytest.importorskip("statsmodels")
  exp, params, opt, step, carry = _train(dict(TINY[task], task=task), 40)
  before = exp.evaluate(params, False)[exp.metric]
  out = train.fit(
    step, params, opt.init(params), exp.batch_fn, steps=40, carry=carry, key=exp.key, progress=False, verbose=False
  )
  after = exp.evaluate(out.params, False)[exp.metric]
  assert after < 0.8 * before, (task, before, after)
  if task in ("dogs", "chars"):  # below chance
    assert after < exp.baselines[next(iter(exp.baselines))]


def test_lstm_solves_the_adding_problem_at_t30():
  """Le et al.'s criterion: test MSE well below the predict-1 baseline (~0.167), here < 0.01."""
  config = dict(task="adding", cell="lstm", hidden=32, batch=64, seq_len=30, lr=0.01)
  exp, params, opt, step, _ = _train(config, 600)
  base = exp.baselines["predict 1"]
  assert abs(base - 1 / 6) < 0.02  # the baseline, computed on the 1,000 test sequences
  opt_state, mse, done = opt.init(params), math.inf, 0
  while done < 600 and mse >= 0.01:  # stop as soon as it is solved
    out = train.fit(
      step, params, opt_state, exp.batch_fn, steps=done + 100, start_step=done, progress=False, verbose=False
    )
    params, opt_state, done = out.params, out.opt_state, done + 100
    mse = exp.evaluate(params, True)["test_mse"]
  assert mse < 0.01, f"test MSE {mse:.4f} after {done} steps (baseline {base:.3f})"


def test_resolve_rejects_impossible_configs():
  with pytest.raises(experiments.ConfigError, match="unknown task"):
    experiments.resolve({"task": "nope"})
  with pytest.raises(experiments.ConfigError, match="--hidden must be a positive integer"):
    experiments.resolve({"task": "adding", "hidden": 0})
  with pytest.raises(experiments.ConfigError, match="--lr must be a positive number"):
    experiments.resolve({"task": "adding", "lr": float("nan")})
  with pytest.raises(experiments.ConfigError, match="dogs task .* --seq-len 3"):
    experiments.resolve({"task": "dogs", "seq_len": 4})
  assert experiments.resolve({"task": "adding"})["seq_len"] == 100  # the published length by default
  with pytest.raises(experiments.ConfigError, match="--attention applies to the encoder-decoder tasks"):
    experiments.resolve({"task": "adding", "attention": "dot"})
  with pytest.raises(experiments.ConfigError, match="--attention must be one of"):
    experiments.resolve({"task": "dates", "attention": "multihead"})
  with pytest.raises(experiments.ConfigError, match="--task dates runs --cell gru or lstm"):
    experiments.build(experiments.resolve({"task": "dates", "cell": "elman"}), jax.random.key(0))
  with pytest.raises(experiments.ConfigError, match="--seq-len of at least 4"):
    experiments.build(experiments.resolve({"task": "reverse", "seq_len": 3}), jax.random.key(0))


def test_sunspots_data_errors_become_config_errors(monkeypatch):
  """A window too long for the series (ValueError) and a missing statsmodels (ImportError) both read as ConfigError."""
  pytest.importorskip("statsmodels")
  with pytest.raises(experiments.ConfigError, match="too few"):
    experiments.build(experiments.resolve({"task": "sunspots", "seq_len": 1000}), jax.random.key(0))
  monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)  # as if statsmodels were not installed
  with pytest.raises(experiments.ConfigError, match=r"pip install 'jrnn\[data\]'"):
    experiments.build(experiments.resolve({"task": "sunspots"}), jax.random.key(0))


def _loss_and_args(task, **options):
  config = experiments.resolve(dict(task=task, hidden=4, batch=2, seq_len=4, **options))
  exp = experiments.build(config, jax.random.key(0))
  params = exp.init(jax.random.key(1))
  batch = exp.batch_fn(0)
  if exp.initial_carry is not None:
    batch = (batch, exp.initial_carry(params))
  return exp.loss_fn, params, batch


def _primitives(jaxpr, found=None):
  """Names of the primitives in ``jaxpr`` and in every jaxpr nested in its equations' params."""
  found = set() if found is None else found
  for eqn in jaxpr.eqns:
    found.add(eqn.primitive.name)
    for value in eqn.params.values():
      for v in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(v, "jaxpr", v)  # a ClosedJaxpr holds a Jaxpr
        if hasattr(inner, "eqns"):
          _primitives(inner, found)
  return found


@pytest.mark.parametrize("task", ["adding", "chars"])  # many-to-one; stateful many-to-many
@pytest.mark.parametrize(
  "options, wanted",
  [
    ({}, None),
    ({"remat": "step"}, "remat"),
    ({"remat": 2}, "remat"),
    ({"vjp": "fused"}, "custom_vjp"),
  ],
)
def test_sequence_options_reach_the_scan(task, options, wanted):
  loss_fn, params, batch = _loss_and_args(task, **options)
  with _options.xla_only():  # kernel="auto" on the XLA scan: the CPU kernel's custom VJP would show too
    names = _primitives(jax.make_jaxpr(loss_fn)(params, batch).jaxpr)
  found = {w for w in ("remat", "checkpoint", "custom_vjp") if any(w in n for n in names)}
  if wanted == "remat":  # jax.checkpoint's primitive is remat2 (checkpoint in some versions)
    assert found & {"remat", "checkpoint"} and "custom_vjp" not in found, names
  else:
    assert found == ({wanted} if wanted else set()), names


@pytest.mark.parametrize(
  "options",
  [
    dict(scan="sequential", projection="hoisted", remat="sqrt", vjp="autodiff"),
    dict(scan="auto", projection="per_step", remat="none", vjp="fused"),
  ],
)
def test_every_option_is_passed_to_unroll_batch_and_leaves_the_loss_unchanged(options, monkeypatch):
  import jrnn

  calls, original = [], jrnn.unroll_batch

  def spy(*args, **kwargs):
    calls.append({k: kwargs.get(k) for k in experiments.OPTION_DEFAULTS})
    return original(*args, **kwargs)

  monkeypatch.setattr(jrnn, "unroll_batch", spy)
  loss_fn, params, batch = _loss_and_args("copy", **options)
  loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  assert calls and all(c == experiments.sequence_options(options) for c in calls), calls
  ref_fn, _, _ = _loss_and_args("copy")
  ref_loss, ref_grads = jax.value_and_grad(ref_fn)(params, batch)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, ref_grads)


def test_options_resolve_to_defaults_and_bad_ones_are_config_errors():
  assert {
    k: experiments.resolve({"task": "adding"})[k] for k in experiments.OPTION_DEFAULTS
  } == experiments.OPTION_DEFAULTS
  assert experiments.sequence_options({"task": "adding"})["remat"] is None  # a config saved before the options
  for bad, match in (
    ({"remat": 0}, "--remat must be"),
    ({"remat": "x"}, "--remat must be"),
    ({"scan": "parallel"}, "--scan must be"),
    ({"vjp": "manual"}, "--vjp must be"),
    ({"projection": "early"}, "--projection must be"),
  ):
    with pytest.raises(experiments.ConfigError, match=match):
      experiments.resolve(dict(task="adding", **bad))
  with pytest.raises(experiments.ConfigError, match="--cell lstm cannot run .*associative"):
    experiments.build(experiments.resolve({"task": "adding", "scan": "associative"}), jax.random.key(0))
