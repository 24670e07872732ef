"""jrnn.Options reach the scan from every place a sequence is run: found in the jaxpr.

``remat`` shows as a ``checkpoint``/``remat`` primitive around the scan body,
``vjp="fused"`` as a ``custom_vjp_call``, ``scan="associative"`` as the
absence of a sequential ``scan`` over the steps; each is looked for in the
program that the entry point builds, so an option dropped on the way fails.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jrnn
from jrnn import _options

I, H, T = 3, 4, 6


def primitives(jaxpr):
  """Every primitive name in a jaxpr, nested ones (scan bodies, custom calls, jit) included."""
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          names |= primitives(inner)
  return names


def grad_primitives(fn, *args):
  return primitives(jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(fn(*a))))(*args).jaxpr)


REMAT = {"checkpoint", "remat", "remat2"}
FUSED = {"custom_vjp_call", "custom_vjp_call_jaxpr"}

CELL = jrnn.lstm(H)
PARAMS = CELL.init(jax.random.key(0), I)
HEAD = jrnn.linear(2)
HEAD_PARAMS = HEAD.init(jax.random.key(1), H)
XS = jnp.ones((T, I))

ENTRY_POINTS = {
  "unroll": lambda p, **o: jrnn.unroll(CELL, p, XS, **o)[1],
  "unroll_batch": lambda p, **o: jrnn.unroll_batch(CELL, p, XS[None], **o)[1],
  "many_to_many": lambda p, **o: jrnn.many_to_many(CELL, p, HEAD, HEAD_PARAMS, XS, **o)[1],
  "many_to_one": lambda p, **o: jrnn.many_to_one(CELL, p, XS, **o)[1],
  "encoder_decoder": lambda p, **o: jrnn.encoder_decoder(
    CELL, p, CELL, p, HEAD, HEAD_PARAMS, XS, decoder_inputs=XS, **o
  )[1],
  "stack": lambda p, **o: jrnn.unroll(jrnn.stack([CELL, CELL]), (p, jrnn.lstm(H).init(jax.random.key(2), H)), XS, **o)[
    1
  ],
  "bidirectional": lambda p, **o: jrnn.unroll(jrnn.bidirectional(CELL), jrnn.BidirectionalParams(p, p), XS, **o)[1],
  "nnx.RNN": lambda p, **o: jrnn.nnx.RNN.from_params(CELL, p, **o)(XS),
}


@pytest.fixture
def xla_scan():
  """kernel="auto" on the XLA scan (the CPU kernel's custom VJP would show in every program)."""
  with _options.xla_only():
    yield


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_remat_and_fused_vjp_reach_the_scan(entry, xla_scan):
  fn = ENTRY_POINTS[entry]
  plain = grad_primitives(fn, PARAMS)
  assert not plain & (REMAT | FUSED), plain
  assert grad_primitives(lambda p: fn(p, remat="step"), PARAMS) & REMAT
  assert grad_primitives(lambda p: fn(p, remat="sqrt"), PARAMS) & REMAT
  # a custom VJP shows in the forward program (under grad it is already split into its two halves)
  assert primitives(jax.make_jaxpr(lambda p: fn(p, vjp="fused"))(PARAMS).jaxpr) & FUSED
  assert not primitives(jax.make_jaxpr(fn)(PARAMS).jaxpr) & FUSED


@pytest.mark.parametrize("entry", ["unroll", "many_to_many", "stack", "nnx.RNN"])
def test_associative_scan_reaches_linear_cells(entry):
  cell = jrnn.min_gru(H)
  params = cell.init(jax.random.key(0), I)
  fns = {
    "unroll": lambda **o: jrnn.unroll(cell, params, XS, **o)[1],
    "many_to_many": lambda **o: jrnn.many_to_many(cell, params, HEAD, HEAD_PARAMS, XS, **o)[1],
    "stack": lambda **o: jrnn.unroll(jrnn.stack([cell]), (params,), XS, **o)[1],
    "nnx.RNN": lambda **o: jrnn.nnx.RNN.from_params(cell, params, **o)(XS),
  }
  fn = fns[entry]
  assert "scan" in primitives(jax.make_jaxpr(lambda: fn(scan="sequential"))().jaxpr)
  assert "scan" not in primitives(jax.make_jaxpr(lambda: fn(scan="associative"))().jaxpr)


def test_one_to_many_and_diagnostics_take_unroll_and_remat():
  def generate(p, **o):
    return jrnn.one_to_many(
      jrnn.elman(2), p, jrnn.linear(2), jrnn.linear(2).init(jax.random.key(1), 2), jnp.ones(2), 5, **o
    )[1]

  p = jrnn.elman(2).init(jax.random.key(0), 2)
  assert not grad_primitives(generate, p) & REMAT
  assert grad_primitives(lambda q: generate(q, remat="step"), p) & REMAT
  norms = jax.make_jaxpr(lambda q: jrnn.diagnostics.loss_grad_norms(CELL, q, XS, jnp.sum, remat="step"))(PARAMS)
  assert primitives(norms.jaxpr) & REMAT
  with pytest.raises(TypeError, match=r"jrnn.one_to_many: unexpected option\(s\) 'vjp'"):
    generate(p, vjp="fused")
  with pytest.raises(TypeError, match=r"jrnn.many_to_one: unexpected option\(s\) 'reverse'"):
    jrnn.many_to_one(CELL, PARAMS, XS, reverse=True)
  with pytest.raises(TypeError, match=r"jrnn.many_to_many: unexpected option\(s\) 'remats'"):
    jrnn.many_to_many(CELL, PARAMS, HEAD, HEAD_PARAMS, XS, remats="step")
  with pytest.raises(ValueError, match="remat must be None, 'step', 'sqrt'"):
    jrnn.nnx.RNN(CELL, I, rngs=nnx.Rngs(0), remat="log")


def test_options_value_is_the_keyword_arguments():
  options = jrnn.Options(remat="sqrt", projection="hoisted")
  a = jrnn.unroll(CELL, PARAMS, XS, **options._asdict())
  b = jrnn.unroll(CELL, PARAMS, XS, remat="sqrt", projection="hoisted")
  assert jnp.array_equal(a[1], b[1])


def test_params_of_another_cell_are_a_clear_error():
  lstm_params = jrnn.lstm(8).init(jax.random.key(0), 3)
  with pytest.raises(
    ValueError,
    match=r"jrnn.unroll: the params do not belong to jrnn.gru: got LSTMParams.*"
    r"makes GRUParams",
  ):
    jrnn.unroll(jrnn.gru(8), lstm_params, jnp.ones((5, 3)))
  with pytest.raises(ValueError, match=r"jrnn.unroll_batch: the params do not belong to jrnn.elman"):
    jrnn.unroll_batch(jrnn.elman(8), lstm_params, jnp.ones((2, 5, 3)))


def test_auto_unroll_is_the_backends_measured_default(monkeypatch):
  from jrnn import _options

  for backend, want in (("cpu", 1), ("gpu", 8), ("tpu", 1)):
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    assert _options.check(jrnn.Options(), "f").unroll == want
    assert _options.check(jrnn.Options(unroll=3), "f").unroll == 3
