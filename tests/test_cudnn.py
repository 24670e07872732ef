"""kernel="cudnn": jrnn's LSTM layers as cuDNN's fused LSTM, checked against the XLA scan.

On a machine without a GPU (CI), cuDNN's call is replaced by
``jrnn._cudnn.reference_lstm``: :func:`jax.experimental.rnn.lstm`'s signature
computed by JAX's own reference, :func:`jax.experimental.rnn.lstm_ref`, on the
weights unpacked by :func:`jax.experimental.rnn.unpack_lstm_weights`. So the
weight layout, the carries, masks, directions, stacking and every gradient of
the dispatch are tested here against the XLA path; on a GPU the same tests run
cuDNN itself (at ``precision="highest"``, so that TensorFloat-32 does not round).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import jrnn
from jrnn import _cudnn
from jrnn import _options

ON_GPU = _cudnn.available()
RTOL, ATOL = (2e-4, 2e-5) if ON_GPU else (1e-5, 1e-6)


@pytest.fixture
def cudnn(monkeypatch):
  """cuDNN if this machine has it; else JAX's reference LSTM in its place. Yields the call's counter."""
  calls = []
  real = _cudnn.lstm_call if ON_GPU else _cudnn.reference_lstm

  def counted(*args, **kwargs):
    calls.append(kwargs)
    return real(*args, **kwargs)

  monkeypatch.setattr(_cudnn, "lstm_call", counted)
  monkeypatch.setattr(_cudnn, "available", lambda: True)
  monkeypatch.setitem(_options.AUTO_KERNEL, jax.default_backend(), "cudnn")  # "auto" takes it where it applies
  return calls


CELLS = {
  "lstm": lambda: jrnn.lstm(5),
  "bidirectional": lambda: jrnn.bidirectional(jrnn.lstm(4)),
  "stack": lambda: jrnn.stack([jrnn.lstm(5), jrnn.lstm(5)]),
  "stack_mixed": lambda: jrnn.stack([jrnn.bidirectional(jrnn.lstm(4)), jrnn.lstm(3)]),
}


def _setup(name, B=3, T=7, I=6):
  cell = CELLS[name]()
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (B, T, I))
  leaves, tree = jax.tree_util.tree_flatten(cell.initial_carry(params))
  keys = jax.random.split(jax.random.key(2), len(leaves))
  carry = tree.unflatten([0.5 * jax.random.normal(k, (B,) + x.shape) for k, x in zip(keys, leaves)])
  return cell, params, xs, carry


def _loss(cell, kernel, mask=None, reverse=False, precision="highest"):
  def loss(params, xs, carry):
    c, hs = jrnn.unroll_batch(cell, params, xs, carry, mask=mask, reverse=reverse, kernel=kernel, precision=precision)
    value = jnp.sum(jnp.sin(hs)) + sum(jnp.sum(jnp.cos(x)) for x in jax.tree_util.tree_leaves(c))
    return value, (c, hs)

  return jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))


LENGTHS = np.array([7, 4, 1])  # right padding: full, partial, one step


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_cudnn_equals_the_scan_with_every_gradient(cudnn, name, reverse, masked):
  cell, params, xs, carry = _setup(name)
  mask = jnp.asarray(np.arange(7)[None, :] < LENGTHS[:, None]) if masked else None
  got = _loss(cell, "cudnn", mask, reverse)(params, xs, carry)
  want = _loss(cell, "xla", mask, reverse)(params, xs, carry)
  chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL)
  layers = _cudnn.plan(cell, params)
  assert not isinstance(layers, str)
  assert len(cudnn) == len(layers)  # one call per layer (traced once under jit)
  assert [c["bidirectional"] for c in cudnn] == [layer.directions == 2 for layer in layers]
  if masked:  # padded steps: zero outputs, on both paths
    assert float(jnp.abs(got[0][1][1][2, 1:]).max()) == 0.0


def test_default_carry_and_auto_match_the_scan(cudnn):
  cell, params, xs, _ = _setup("stack_mixed")
  got = jrnn.unroll_batch(cell, params, xs, precision="highest")
  assert len(cudnn) == 2  # "auto" took cuDNN, one call per layer
  want = jrnn.unroll_batch(cell, params, xs, kernel="xla", precision="highest")
  chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL)


def test_pack_is_the_layout_jax_unpacks():
  cell = jrnn.bidirectional(jrnn.lstm(3))
  params = cell.init(jax.random.key(0), 5)
  flat = _cudnn.pack((params.forward, params.backward))
  assert flat.shape == (rnn.get_num_params_in_lstm(5, 3, 1, True),)
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, 5, 3, 1, True)
  for d, p in enumerate((params.forward, params.backward)):
    np.testing.assert_array_equal(w_ih[d], p.wx.T)
    np.testing.assert_array_equal(w_hh[d], p.wh.T)
    np.testing.assert_array_equal(b_ih[d], p.b)
    np.testing.assert_array_equal(b_hh[d], np.zeros(12, np.float32))


def test_weight_conversion_against_lstm_ref_and_a_numpy_loop():
  """jrnn.lstm on its own params == lstm_ref on the packed ones == an explicit float64 NumPy loop."""
  cell = jrnn.lstm(4)
  params = cell.init(jax.random.key(3), 3)
  xs = np.asarray(jax.random.normal(jax.random.key(4), (2, 6, 3)))
  lengths = np.array([6, 3], np.int32)
  mask = np.arange(6)[None, :] < lengths[:, None]
  zeros = jnp.zeros((1, 2, 4))
  with jax.default_matmul_precision("float32"):  # no TensorFloat-32 on a GPU
    ys, hn, cn = _cudnn.reference_lstm(
      jnp.asarray(xs), zeros, zeros, _cudnn.pack((params,)), jnp.asarray(lengths), 3, 4, 1, 0.0, False
    )
    carry, hs = jrnn.unroll_batch(cell, params, xs, mask=mask, kernel="xla")
  chex.assert_trees_all_close((ys, hn[0], cn[0]), (hs, carry.h, carry.c), rtol=1e-5, atol=1e-6)
  wx, wh, b = (np.asarray(p, np.float64) for p in params)
  for row in range(2):
    h = c = np.zeros(4)
    for t in range(lengths[row]):
      z = xs[row, t] @ wx + h @ wh + b
      c = _sigmoid(z[4:8]) * c + _sigmoid(z[:4]) * np.tanh(z[8:12])
      h = _sigmoid(z[12:]) * np.tanh(c)
      np.testing.assert_allclose(ys[row, t], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hn[0, row], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ys[row, lengths[row] :], 0.0)


def _sigmoid(z):
  return 1 / (1 + np.exp(-z))


def _holes():
  return jnp.asarray([[True, False, True, True], [True, True, True, False]])


def test_auto_with_a_traced_mask_decides_on_the_device(cudnn, monkeypatch):
  """Right padding takes cuDNN; a mask with holes takes the scan (a marked cuDNN tells which ran)."""
  real = _cudnn.lstm_call

  def marked(*args, **kwargs):
    ys, hn, cn = real(*args, **kwargs)
    return ys + 100.0, hn, cn

  monkeypatch.setattr(_cudnn, "lstm_call", marked)
  cell, params, xs, _ = _setup("lstm", B=2, T=4)
  run = jax.jit(lambda m: jrnn.unroll_batch(cell, params, xs, mask=m, precision="highest")[1])
  padded = jnp.asarray([[True, True, True, False], [True, False, False, False]])
  want_padded = jrnn.unroll_batch(cell, params, xs, mask=padded, kernel="xla", precision="highest")[1]
  np.testing.assert_allclose(run(padded), want_padded + 100.0, rtol=RTOL, atol=ATOL)
  want_holes = jrnn.unroll_batch(cell, params, xs, mask=_holes(), kernel="xla", precision="highest")[1]
  np.testing.assert_allclose(run(_holes()), want_holes, rtol=RTOL, atol=ATOL)


def test_required_cudnn_with_a_traced_mask_gives_nan_rows_for_holes(cudnn):
  cell, params, xs, _ = _setup("lstm", B=2, T=4)
  mask = _holes().at[1].set(jnp.asarray([True, True, False, False]))  # row 0 has a hole, row 1 is padding
  carry, hs = jax.jit(lambda m: jrnn.unroll_batch(cell, params, xs, mask=m, kernel="cudnn", precision="highest"))(mask)
  assert bool(jnp.isnan(hs[0]).all()) and bool(jnp.isnan(carry.h[0]).all())
  want_carry, want_hs = jrnn.unroll_batch(cell, params, xs, mask=mask, kernel="xla", precision="highest")
  chex.assert_trees_all_close(
    (carry.h[1], carry.c[1], hs[1]), (want_carry.h[1], want_carry.c[1], want_hs[1]), rtol=RTOL, atol=ATOL
  )


@pytest.mark.parametrize(
  "change, message",
  [
    (dict(cell=jrnn.gru(5)), "cuDNN runs jrnn.lstm and stacks and bidirectional layers of it, not jrnn.gru"),
    (dict(cell=jrnn.stack([jrnn.lstm(5), jrnn.gru(5)])), "layer 1 of the stack: cuDNN runs jrnn.lstm"),
    (dict(cell=jrnn.bidirectional(jrnn.lstm(5), jrnn.lstm(4))), "a bidirectional layer runs on cuDNN only"),
    (dict(reset=jnp.zeros((2, 4), bool)), "a reset runs on the XLA scan only"),
    (dict(remat="step"), "remat='step' runs on the XLA scan only"),
    (dict(vjp="fused"), "vjp='fused' runs on the XLA scan only"),
    (dict(precision="bfloat16"), "precision='bfloat16' .* not implemented for cuDNN"),
    (dict(mask=_holes()), "the mask must be right padding"),
    (dict(mask=jnp.asarray([[True] * 4, [False] * 4])), "the mask must be right padding"),
  ],
)
def test_what_cudnn_cannot_run_is_a_clear_error_and_auto_falls_back(cudnn, change, message):
  kwargs = dict(change)
  cell = kwargs.pop("cell", jrnn.lstm(5))
  params = cell.init(jax.random.key(0), 3)
  xs = jnp.ones((2, 4, 3))
  with pytest.raises(ValueError, match=f"jrnn.unroll_batch: {message}"):
    jrnn.unroll_batch(cell, params, xs, kernel="cudnn", **kwargs)
  with pytest.raises(ValueError, match=f"jrnn.which_kernel: {message}"):
    jrnn.which_kernel(cell, params, xs, kernel="cudnn", **kwargs)
  assert jrnn.which_kernel(cell, params, xs, **kwargs) == "xla"
  chex.assert_trees_all_close(
    jrnn.unroll_batch(cell, params, xs, **kwargs), jrnn.unroll_batch(cell, params, xs, kernel="xla", **kwargs)
  )
  assert not cudnn


def test_auto_takes_cudnn_only_on_backends_where_it_was_measured_faster(cudnn, monkeypatch):
  cell, params, xs, _ = _setup("lstm")
  assert jrnn.which_kernel(cell, params, xs) == "cudnn"
  monkeypatch.delitem(_options.AUTO_KERNEL, jax.default_backend())
  assert jrnn.which_kernel(cell, params, xs) == "xla" and jrnn.which_kernel(cell, params, xs, kernel="cudnn") == "cudnn"
  jrnn.unroll_batch(cell, params, xs)
  assert not cudnn


def test_float64_runs_on_the_scan_only(cudnn, x64):
  cell = jrnn.lstm(3, dtype=jnp.float64)
  params = cell.init(jax.random.key(0), 2)
  xs = jnp.ones((2, 4, 2), jnp.float64)
  with pytest.raises(ValueError, match="float32 params and inputs only"):
    jrnn.unroll_batch(cell, params, xs, kernel="cudnn")
  assert jrnn.which_kernel(cell, params, xs) == "xla"


@pytest.mark.skipif(ON_GPU, reason="checks the message of a machine without a GPU")
def test_without_a_gpu_cudnn_is_refused_and_auto_is_not_cudnn():
  cell = jrnn.lstm(3)
  params = cell.init(jax.random.key(0), 2)
  xs = jnp.ones((2, 4, 2))
  assert not jrnn.cudnn_available()
  with pytest.raises(ValueError, match="kernel='cudnn' needs a GPU with cuDNN; JAX's default backend is 'cpu'"):
    jrnn.unroll_batch(cell, params, xs, kernel="cudnn")
  assert jrnn.which_kernel(cell, params, xs) == ("cpu" if jrnn.cpu_kernel_available() else "xla")


def test_kernel_option_is_checked_and_unroll_refuses_cudnn():
  cell = jrnn.lstm(3)
  params = cell.init(jax.random.key(0), 2)
  with pytest.raises(ValueError, match=r"kernel must be one of \('auto', 'xla', 'cudnn', 'cpu'\), got 'cuda'"):
    jrnn.unroll_batch(cell, params, jnp.ones((1, 4, 2)), kernel="cuda")
  with pytest.raises(ValueError, match="jrnn.unroll: kernel='cudnn' runs a batch; use jrnn.unroll_batch"):
    jrnn.unroll(cell, params, jnp.ones((4, 2)), kernel="cudnn")
  _, hs = jrnn.unroll(cell, params, jnp.ones((4, 2)), kernel="xla")
  np.testing.assert_allclose(hs, jrnn.unroll(cell, params, jnp.ones((4, 2)))[1])


def test_nnx_rnn_passes_the_kernel(cudnn):
  cell, params, xs, _ = _setup("bidirectional")
  layer = jrnn.nnx.RNN.from_params(cell, params, kernel="cudnn", precision="highest")
  want = jrnn.unroll_batch(cell, params, xs, kernel="xla", precision="highest")[1]
  np.testing.assert_allclose(layer(xs), want, rtol=RTOL, atol=ATOL)
  assert len(cudnn) == 1
