"""The ``precision`` option reaches every matrix product: every ``dot_general`` in the jaxpr carries it.

For every cell in ``jrnn.CELLS``, bare and inside every wrapper in
``jrnn.WRAPPERS``, and every way it can run (``vjp`` autodiff/fused,
``projection`` hoisted/per_step, ``scan`` sequential/associative), the forward
program and the program of ``jax.grad`` of a loss through the head
(:func:`jrnn.many_to_many`) are walked, sub-jaxprs included (scan bodies,
``cond`` branches, ``custom_vjp_call``, ``checkpoint``, ``pjit``), and every
``dot_general`` must carry the requested precision; without the option they
carry ``None``, so it is the option that put it there. Only ``make_jaxpr``:
nothing is compiled but the few value checks at the end (CPU ignores the
precision, so the values must not change).
"""

import functools
import pathlib
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import jrnn

I, H, T, O = 3, 4, 5, 2
MASK = jnp.array([1, 1, 0, 1, 1], bool)
HIGHEST = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
HEAD = jrnn.linear(O)
PROJECTIONS = ("hoisted", "per_step")
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def dot_precisions(jaxpr):
  """The ``precision`` of every ``dot_general`` in a jaxpr, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += dot_precisions(inner)
  return found


def assert_every_dot(fn, *args, expected):
  precisions = dot_precisions(jax.make_jaxpr(fn)(*args).jaxpr)
  assert precisions, "no dot_general at all: the check would pass vacuously"
  assert all(p == expected for p in precisions), precisions


def _variants():
  """name -> (make, base kind, wrapper name): every cell, bare and in every wrapper."""
  out = {}
  for name, make in jrnn.CELLS.items():
    base = type(make(H).kind)
    out[name] = (lambda make=make: make(H), base, None)
    for wrap_name, wrap in jrnn.WRAPPERS.items():
      out[f"{wrap_name}({name})"] = (lambda make=make, wrap=wrap: wrap(make(H), dtype=jnp.float32), base, wrap_name)
  return out


VARIANTS = _variants()


def _configs(base, wrapper):
  """Every way a variant can run: vjp x projection x scan, as far as its kind allows."""
  scans = ["sequential"] + (["associative"] if base is jrnn.LinearRecurrence else [])
  configs = [dict(vjp="autodiff", projection=p, scan=s) for p in PROJECTIONS for s in scans]
  if base is jrnn.AffineRecurrence and wrapper != "linear_recurrent_block":  # a block is Projected: no fusion
    configs += [dict(vjp="fused", projection=p, scan="sequential") for p in PROJECTIONS]
  return configs


def _model(name):
  make, base, wrapper = VARIANTS[name]
  cell = make()
  params = cell.init(jax.random.key(0), I)
  head_params = HEAD.init(jax.random.key(1), cell.hidden_size)
  xs = jax.random.normal(jax.random.key(2), (T, I))
  return cell, params, head_params, xs, _configs(base, wrapper)


def _loss(cell, **options):
  def loss(params, head_params, xs):
    _, ys = jrnn.many_to_many(cell, params, HEAD, head_params, xs, mask=MASK, **options)
    return jnp.sum(jnp.square(ys))

  return loss


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_product_of_cell_and_head_has_the_precision(name):
  cell, params, head_params, xs, configs = _model(name)
  for options in configs:
    forward = _loss(cell, precision="highest", **options)
    assert_every_dot(forward, params, head_params, xs, expected=HIGHEST)
    grad = jax.grad(_loss(cell, precision="highest", **options), (0, 1, 2))
    assert_every_dot(grad, params, head_params, xs, expected=HIGHEST)
    # Without the option nothing sets a precision: the option is what put it there.
    assert_every_dot(jax.grad(_loss(cell, **options), (0, 1, 2)), params, head_params, xs, expected=None)


def test_every_spelling_of_the_precision():
  cell, params, head_params, xs, _ = _model("gru")
  for precision, expected in [
    ("default", lax.Precision.DEFAULT),
    ("bfloat16", lax.Precision.DEFAULT),
    ("high", lax.Precision.HIGH),
    ("tensorfloat32", lax.Precision.HIGH),
    ("highest", lax.Precision.HIGHEST),
    ("float32", lax.Precision.HIGHEST),
    (lax.Precision.HIGH, lax.Precision.HIGH),
    (lax.Precision.DEFAULT, lax.Precision.DEFAULT),
  ]:
    grad = jax.grad(_loss(cell, precision=precision, vjp="fused"), (0, 1, 2))
    assert_every_dot(grad, params, head_params, xs, expected=(expected, expected))


LSTM = jrnn.lstm(H)
LSTM_PARAMS = LSTM.init(jax.random.key(0), I)
XS = jax.random.normal(jax.random.key(2), (T, I))
HEAD_H = HEAD.init(jax.random.key(1), H)


def _sum(fn):
  return lambda *a: jnp.sum(jnp.square(fn(*a)))


ENTRY_POINTS = {
  "unroll": lambda p, **o: jrnn.unroll(LSTM, p, XS, **o)[1],
  "unroll_batch": lambda p, **o: jrnn.unroll_batch(LSTM, p, XS[None], kernel="xla", **o)[1],
  "unroll_batch fused": lambda p, **o: jrnn.unroll_batch(LSTM, p, jnp.stack([XS, XS]), vjp="fused", **o)[1],
  "remat step": lambda p, **o: jrnn.unroll(LSTM, p, XS, remat="step", **o)[1],
  "remat sqrt": lambda p, **o: jrnn.unroll_batch(LSTM, p, XS[None], remat="sqrt", **o)[1],
  "many_to_one": lambda p, **o: jrnn.many_to_one(LSTM, p, XS, **o)[1],
  "one_to_many": lambda p, **o: jrnn.one_to_many(
    jrnn.lstm(H), p, jrnn.linear(I), jrnn.linear(I).init(jax.random.key(1), H), XS[0], 4, **o
  )[1],
  "encoder_decoder teacher": lambda p, **o: jrnn.encoder_decoder(
    LSTM, p, LSTM, p, HEAD, HEAD_H, XS, decoder_inputs=XS, **o
  )[1],
  "encoder_decoder feedback": lambda p, **o: jrnn.encoder_decoder(
    LSTM, p, LSTM, p, jrnn.linear(I), jrnn.linear(I).init(jax.random.key(1), H), XS, start=XS[0], length=3, **o
  )[1],
  "nnx.RNN": lambda p, **o: jrnn.nnx.RNN.from_params(LSTM, p, **o)(XS),
  "nnx.RNN batch fused": lambda p, **o: jrnn.nnx.RNN.from_params(LSTM, p, vjp="fused", **o)(XS[None]),
  "diagnostics.loss_grad_norms": lambda p, **o: jrnn.diagnostics.loss_grad_norms(
    LSTM, p, XS, lambda hs: jnp.sum(HEAD.apply(HEAD_H, hs)), **o
  ),
  "diagnostics.state_jacobians": lambda p, **o: jrnn.diagnostics.state_jacobians(LSTM, p, XS, **o),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_passes_the_precision_on(entry):
  fn = ENTRY_POINTS[entry]
  assert_every_dot(lambda p: fn(p, precision="highest"), LSTM_PARAMS, expected=HIGHEST)
  assert_every_dot(jax.grad(_sum(lambda p: fn(p, precision="highest"))), LSTM_PARAMS, expected=HIGHEST)
  assert_every_dot(jax.grad(_sum(fn)), LSTM_PARAMS, expected=None)


@pytest.mark.skipif(not jrnn.cpu_kernel_available(), reason="the CPU kernel is not built here")
def test_the_cpu_kernels_weight_gradients_keep_the_precision():
  """The kernel's forward has no XLA product (it projects inside); its backward rule, traced late, has them."""
  fn = lambda p, **o: jrnn.unroll_batch(LSTM, p, XS[None], kernel="cpu", **o)[1]
  assert_every_dot(jax.grad(_sum(lambda p: fn(p, precision="highest"))), LSTM_PARAMS, expected=HIGHEST)
  assert_every_dot(jax.grad(_sum(fn)), LSTM_PARAMS, expected=None)


def test_the_fused_rules_traced_late_keep_the_precision():
  """``grad(jit(f))``: JAX traces the custom VJP's fwd and bwd after the driver's context has closed."""
  loss = _loss(LSTM, vjp="fused", precision="highest")
  assert_every_dot(jax.grad(jax.jit(loss), (0, 1, 2)), LSTM_PARAMS, HEAD_H, XS, expected=HIGHEST)
  assert_every_dot(jax.jit(jax.grad(loss, (0, 1, 2))), LSTM_PARAMS, HEAD_H, XS, expected=HIGHEST)


def test_head_apply_takes_the_precision():
  hs = jnp.ones((T, H))
  assert_every_dot(lambda w: HEAD.apply(w, hs, precision="highest"), HEAD_H, expected=HIGHEST)
  assert_every_dot(lambda w: HEAD.apply(w, hs), HEAD_H, expected=None)


def test_none_keeps_the_surrounding_context():
  """``precision=None`` is JAX's default: a ``jax.default_matmul_precision`` around the call still applies,
  and an explicit option wins inside it."""
  loss = _loss(LSTM, vjp="fused")
  with jax.default_matmul_precision("high"):
    assert_every_dot(jax.grad(loss, (0, 1, 2)), LSTM_PARAMS, HEAD_H, XS, expected=(lax.Precision.HIGH,) * 2)
    explicit = _loss(LSTM, vjp="fused", precision="highest")
    assert_every_dot(jax.grad(explicit, (0, 1, 2)), LSTM_PARAMS, HEAD_H, XS, expected=HIGHEST)


@pytest.mark.parametrize(
  "name, options", [("elman", {}), ("lstm", dict(vjp="fused")), ("min_gru", dict(scan="associative")), ("lru", {})]
)
def test_values_do_not_change_on_cpu(name, options):
  """CPU computes float32 products in float32 whatever the precision: the option changes no value here."""
  if jax.default_backend() != "cpu":
    pytest.skip("on an accelerator the precision is meant to change the rounding")
  cell, params, head_params, xs, _ = _model(name)
  plain = jit(jax.value_and_grad(_loss(cell, **options), (0, 1, 2)))(params, head_params, xs)
  highest = jit(jax.value_and_grad(_loss(cell, precision="highest", **options), (0, 1, 2)))(params, head_params, xs)
  chex.assert_trees_all_close(highest, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
  "precision, error, match",
  [
    ("fp32", ValueError, r"precision must be None, a jax.lax.Precision or one of .*'highest'.*got 'fp32'"),
    ("HIGHEST", ValueError, r"precision must be .*got 'HIGHEST'"),
    (2, TypeError, r"precision must be None, a jax.lax.Precision or one of .*got 2 of type int"),
    (("highest", "highest"), TypeError, r"precision must be .*got \('highest', 'highest'\) of type tuple"),
  ],
)
def test_bad_precisions_are_a_clear_error(precision, error, match):
  calls = {
    "jrnn.unroll": lambda: jrnn.unroll(LSTM, LSTM_PARAMS, XS, precision=precision),
    "jrnn.unroll_batch": lambda: jrnn.unroll_batch(LSTM, LSTM_PARAMS, XS[None], precision=precision),
    "jrnn.many_to_many": lambda: jrnn.many_to_many(LSTM, LSTM_PARAMS, HEAD, HEAD_H, XS, precision=precision),
    "jrnn.one_to_many": lambda: jrnn.one_to_many(
      LSTM, LSTM_PARAMS, jrnn.linear(I), jrnn.linear(I).init(jax.random.key(1), H), XS[0], 3, precision=precision
    ),
    "jrnn.linear.apply": lambda: HEAD.apply(HEAD_H, jnp.ones(H), precision=precision),
    "jrnn.nnx.RNN": lambda: jrnn.nnx.RNN(LSTM, I, rngs=nnx.Rngs(0), precision=precision),
    "jrnn.diagnostics.state_jacobians": lambda: jrnn.diagnostics.state_jacobians(
      LSTM, LSTM_PARAMS, XS, precision=precision
    ),
  }
  for fn_name, call in calls.items():
    with pytest.raises(error, match=f"{fn_name}: {match}"):
      call()


def test_the_options_value_carries_the_precision():
  options = jrnn.Options(precision="highest", vjp="fused")
  assert_every_dot(lambda p: jrnn.unroll(LSTM, p, XS, **options._asdict())[1], LSTM_PARAMS, expected=HIGHEST)
  np.testing.assert_equal(jrnn.Options().precision, None)


def test_the_accelerators_page_runs_as_written(capsys):
  """docs/accelerators.md: its code runs in order, and what it prints is what the page says."""
  page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "accelerators.md"
  ns = {}
  try:
    for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
      exec(compile(code, str(page), "exec"), ns)
  finally:
    jax.config.update("jax_default_matmul_precision", None)
  assert capsys.readouterr().out.split("\n")[1:] == ["bfloat16 bfloat16 float32", "float32", "True", ""]
  if jax.default_backend() == "cpu":
    chex.assert_trees_all_equal(ns["fast"], ns["exact"])
  chex.assert_trees_all_close(ns["exact_again"], ns["exact"], rtol=1e-6, atol=1e-7)
