"""kernel="cpu": jrnn's compiled CPU recurrence kernel, checked against the XLA scan.

The XLA path (``kernel="xla"``, itself tested against Python loops, NumPy and
PyTorch elsewhere) is the reference: outputs, final carries and the gradients
of the params, the inputs and the initial carry must agree to float32
rounding, and to float64 rounding in float64. ``jax.test_util.check_grads``
checks the custom VJP against finite differences.

Skipped where the extension was not built (``jrnn.cpu_kernel_available()``);
an install from source with a C++ compiler, as here and in CI, builds it.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from jrnn import _cpu_kernel
from jrnn import _cpu_layer
from jrnn import _options

needs_kernel = pytest.mark.skipif(
  not _cpu_kernel.available(), reason=f"the CPU kernel is not built here: {_cpu_kernel.why_unavailable()}"
)
RTOL, ATOL = 2e-5, 2e-6

CELLS = {
  "elman": lambda dtype: jrnn.elman(5, dtype=dtype),
  "gru": lambda dtype: jrnn.gru(5, dtype=dtype),
  "lstm": lambda dtype: jrnn.lstm(5, dtype=dtype),
  "bidirectional": lambda dtype: jrnn.bidirectional(jrnn.gru(4, dtype=dtype), jrnn.lstm(3, dtype=dtype)),
  "stack_mixed": lambda dtype: jrnn.stack([jrnn.bidirectional(jrnn.lstm(4, dtype=dtype)), jrnn.gru(3, dtype=dtype)]),
  "float64_stack": lambda dtype: jrnn.stack(
    [jrnn.gru(3, dtype=dtype), jrnn.bidirectional(jrnn.lstm(3, dtype=dtype), jrnn.elman(2, dtype=dtype))]
  ),
}
LENGTHS = np.array([7, 4, 1, 0])  # right padding: full, partial, one step, none


def _setup(name, B=4, T=7, I=6, dtype=jnp.float32):
  """The cell, params with every leaf random (GRU's b_hn too), inputs and a random initial carry."""
  cell = CELLS[name](dtype)
  params = cell.init(jax.random.key(0), I)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  params = tree.unflatten([x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
  xs = jax.random.normal(jax.random.key(1), (B, T, I), dtype)
  leaves, tree = jax.tree_util.tree_flatten(cell.initial_carry(params))
  keys = jax.random.split(jax.random.key(2), len(leaves))
  carry = tree.unflatten([0.5 * jax.random.normal(k, (B,) + x.shape, x.dtype) for k, x in zip(keys, leaves)])
  return cell, params, xs, carry


def _loss(cell, kernel, mask=None, reverse=False):
  def loss(params, xs, carry):
    c, hs = jrnn.unroll_batch(cell, params, xs, carry, mask=mask, reverse=reverse, kernel=kernel)
    value = jnp.sum(jnp.sin(hs)) + sum(jnp.sum(jnp.cos(x)) for x in jax.tree_util.tree_leaves(c))
    return value, (c, hs)

  return jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))


def _mask(lengths, T):
  return jnp.asarray(np.arange(T)[None, :] < lengths[:, None])


def _layers(cell):
  """The number of single-direction layers: kernel calls per pass."""
  if cell.name in ("jrnn.stack", "jrnn.bidirectional"):
    return sum(_layers(c) for c in cell.kind.layers)
  return 1


# Each cell in both directions with padding; the compositions with and without it (to keep compilation short).
MATRIX = [(name, reverse, True) for name in ("elman", "gru", "lstm") for reverse in (False, True)]
MATRIX += [(name, reverse, reverse) for name in ("bidirectional", "stack_mixed") for reverse in (False, True)]


@needs_kernel
@pytest.mark.parametrize("name, reverse, masked", MATRIX)
def test_kernel_equals_the_scan_with_every_gradient(name, reverse, masked):
  cell, params, xs, carry = _setup(name)
  mask = _mask(LENGTHS, 7) if masked else None
  lowered = _loss(cell, "cpu", mask, reverse).lower(params, xs, carry)
  got = lowered.compile()(params, xs, carry)
  want = _loss(cell, "xla", mask, reverse)(params, xs, carry)
  chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL)
  hlo, n = lowered.as_text(), _layers(cell)  # one call per single-direction layer and pass
  assert hlo.count("jrnn_recurrence_forward") == n and hlo.count("jrnn_recurrence_backward") == n
  if masked:  # padded steps give zero outputs; a row of length 0 keeps its initial carry
    hs = got[0][1][1]
    assert float(jnp.abs(hs[2, 1:]).max()) == 0.0 and float(jnp.abs(hs[3]).max()) == 0.0
    chex.assert_trees_all_close(_row(got[0][1][0], 3), _row(carry, 3))


def _row(tree, b):
  return jax.tree_util.tree_map(lambda c: c[b], tree)


@needs_kernel
def test_float64_equals_the_scan_to_float64_rounding(x64):
  cell, params, xs, carry = _setup("float64_stack", dtype=jnp.float64)
  mask = _mask(LENGTHS, 7)
  got = _loss(cell, "cpu", mask, True)(params, xs, carry)
  want = _loss(cell, "xla", mask, True)(params, xs, carry)
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-13)


@needs_kernel
@pytest.mark.parametrize("name", ["elman", "gru", "lstm"])
def test_gradients_against_finite_differences(x64, name):
  cell, params, xs, carry = _setup(name, B=2, T=3, I=2, dtype=jnp.float64)
  mask = _mask(np.array([3, 2]), 3)

  def f(params, xs, carry):
    c, hs = jrnn.unroll_batch(cell, params, xs, carry, mask=mask, kernel="cpu")
    return hs, c

  check_grads(f, (params, xs, carry), order=1, modes=("rev",))
  check_grads(lambda *a: jrnn.unroll_batch(cell, *a, mask=mask, reverse=True, kernel="cpu"), (params, xs), 1, ("rev",))


@pytest.fixture
def threads():
  """Sets the kernel's thread count for one test (``JrnnSetThreads``) and restores it."""
  lib = _cpu_kernel._library[0]
  before = lib.JrnnGetThreads()
  yield lib.JrnnSetThreads
  lib.JrnnSetThreads(before)


@needs_kernel
@pytest.mark.skipif(not _cpu_kernel.packed(), reason="the packed GEMM needs AVX-512")
@pytest.mark.parametrize("name", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("H, panels", [(70, 3), (400, 13)])
def test_the_packed_gemm_on_1_2_and_3_threads_is_as_accurate_as_the_scan(threads, name, H, panels):
  """H = 70: three panels of 32 columns, the last one 6 wide (one thread: under 128 units per thread). H = 400:
  13 panels, the last 16 wide, split 6 / 7 between two threads and 4 / 4 / 5 among three. B = 11 is a tile of 8
  rows and one of 3; the rows are right padded to 9, 5, 1, 0 ... steps.

  The reference is the scan in float64: at H = 400 the float32 sums of both paths are off by up to 1e-7 of the
  largest gradient, so each leaf of the kernel must be within 4x the float32 scan's error (or 2e-6 of the leaf).
  """
  make = {"elman": jrnn.elman, "gru": jrnn.gru, "lstm": jrnn.lstm}[name]
  cell = make(H)
  params = cell.init(jax.random.key(0), 6)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  params = tree.unflatten([x + 0.05 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  xs = jax.random.normal(jax.random.key(1), (11, 9, 6))
  carry = jax.tree_util.tree_map(
    lambda x: 0.5 * jax.random.normal(jax.random.key(2), (11,) + x.shape), cell.initial_carry(params)
  )
  mask = _mask(np.array([9, 5, 1, 0, 9, 9, 3, 9, 8, 9, 2]), 9)
  assert _cpu_layer.pack(params.wh, {"elman": 1, "gru": 3, "lstm": 4}[name]).shape[1] == panels
  with jax.enable_x64(True):
    wide = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)
    exact = _loss(make(H, dtype=jnp.float64), "xla", mask, name == "gru")(wide(params), wide(xs), wide(carry))
    exact = [np.asarray(x) for x in jax.tree_util.tree_leaves(exact)]
  scan = jax.tree_util.tree_leaves(_loss(cell, "xla", mask, name == "gru")(params, xs, carry))
  run = _loss(cell, "cpu", mask, name == "gru")
  for n in (1, 2, 3):
    threads(n)
    for got, want, ref in zip(jax.tree_util.tree_leaves(run(params, xs, carry)), scan, exact):
      error = np.abs(np.asarray(got, np.float64) - ref).max()
      bound = max(4 * np.abs(np.asarray(want, np.float64) - ref).max(), 2e-6 * np.abs(ref).max())
      assert error <= bound, (n, error, bound)


@needs_kernel
def test_a_batch_of_one_and_one_sequence():
  cell, params, xs, carry = _setup("lstm", B=1, T=5)
  chex.assert_trees_all_close(
    _loss(cell, "cpu")(params, xs, carry), _loss(cell, "xla")(params, xs, carry), rtol=RTOL, atol=ATOL
  )

  def one(kernel):
    def loss(params, x):
      c, hs = jrnn.unroll(cell, params, x, mask=jnp.arange(5) < 4, reverse=True, kernel=kernel)
      return jnp.sum(jnp.sin(hs)) + jnp.sum(jnp.cos(c.c)), hs

    return jax.value_and_grad(loss, (0, 1), has_aux=True)(params, xs[0])

  chex.assert_trees_all_close(one("cpu"), one("xla"), rtol=RTOL, atol=ATOL)


def _holes():
  return jnp.asarray([[True, False, True, True], [True, True, True, False]])


@needs_kernel
def test_auto_with_a_traced_mask_decides_on_the_device(monkeypatch):
  """Right padding takes the kernel; a mask with holes takes the scan (a marked kernel tells which ran)."""
  monkeypatch.setitem(_options.AUTO_KERNEL, "cpu", "cpu")
  real = _cpu_kernel.run

  def marked(*args):
    carry, hs = real(*args)
    return carry, hs + 100.0

  monkeypatch.setattr(_cpu_kernel, "run", marked)
  cell, params, xs, _ = _setup("gru", B=2, T=4)
  run = jax.jit(lambda m: jrnn.unroll_batch(cell, params, xs, mask=m)[1])
  padded = jnp.asarray([[True, True, True, False], [True, False, False, False]])
  want_padded = jrnn.unroll_batch(cell, params, xs, mask=padded, kernel="xla")[1]
  np.testing.assert_allclose(run(padded), want_padded + 100.0, rtol=RTOL, atol=ATOL)
  want_holes = jrnn.unroll_batch(cell, params, xs, mask=_holes(), kernel="xla")[1]
  np.testing.assert_allclose(run(_holes()), want_holes, rtol=RTOL, atol=ATOL)


@needs_kernel
def test_required_kernel_with_a_traced_mask_gives_nan_rows_for_holes():
  cell, params, xs, _ = _setup("lstm", B=2, T=4)
  mask = _holes().at[1].set(jnp.asarray([True, True, False, False]))  # row 0 has a hole, row 1 is padding
  carry, hs = jax.jit(lambda m: jrnn.unroll_batch(cell, params, xs, mask=m, kernel="cpu"))(mask)
  assert bool(jnp.isnan(hs[0]).all()) and bool(jnp.isnan(carry.h[0]).all())
  want_carry, want_hs = jrnn.unroll_batch(cell, params, xs, mask=mask, kernel="xla")
  chex.assert_trees_all_close((_row(carry, 1), hs[1]), (_row(want_carry, 1), want_hs[1]), rtol=RTOL, atol=ATOL)


REFUSALS = [
  (dict(cell=jrnn.min_gru(5)), "the CPU kernel runs jrnn.elman \\(tanh\\), jrnn.gru and jrnn.lstm.*not jrnn.min_gru"),
  (dict(cell=jrnn.elman(5, activation="relu")), "the CPU kernel runs jrnn.elman with activation='tanh' only"),
  (dict(cell=jrnn.stack([jrnn.lstm(5), jrnn.lstmp(5, 3)])), "layer 1 of the stack: the CPU kernel runs"),
  (dict(cell=jrnn.bidirectional(jrnn.gru(5), jrnn.min_lstm(4))), "the backward direction of the bidirectional layer"),
  (dict(reset=jnp.zeros((2, 4), bool)), "a reset runs on the XLA scan only"),
  (dict(remat="step"), "remat='step' runs on the XLA scan only"),
  (dict(precision="bfloat16"), "precision='bfloat16' \\(one bfloat16 pass\\) is not implemented by the CPU kernel"),
  (dict(mask=_holes()), "the mask must be right padding"),
]


@needs_kernel
@pytest.mark.parametrize("change, message", REFUSALS)
def test_what_the_kernel_cannot_run_is_a_clear_error_and_auto_falls_back(monkeypatch, change, message):
  monkeypatch.setitem(_options.AUTO_KERNEL, "cpu", "cpu")  # "auto" would take the kernel where it applies
  kwargs = dict(change)
  cell = kwargs.pop("cell", jrnn.lstm(5))
  params = cell.init(jax.random.key(0), 3)
  xs = jnp.ones((2, 4, 3))
  with pytest.raises(ValueError, match=f"jrnn.unroll_batch: {message}.*; use kernel='auto' or 'xla'"):
    jrnn.unroll_batch(cell, params, xs, kernel="cpu", **kwargs)
  with pytest.raises(ValueError, match=f"jrnn.which_kernel: {message}"):
    jrnn.which_kernel(cell, params, xs, kernel="cpu", **kwargs)
  assert jrnn.which_kernel(cell, params, xs, **kwargs) == "xla"
  chex.assert_trees_all_close(
    jrnn.unroll_batch(cell, params, xs, **kwargs), jrnn.unroll_batch(cell, params, xs, kernel="xla", **kwargs)
  )


@needs_kernel
def test_the_refusals_of_one_sequence_name_unroll():
  cell = jrnn.gru(3)
  params = cell.init(jax.random.key(0), 2)
  with pytest.raises(ValueError, match="jrnn.unroll: a reset runs on the XLA scan only"):
    jrnn.unroll(cell, params, jnp.ones((4, 2)), reset=jnp.zeros(4, bool), kernel="cpu")
  with pytest.raises(ValueError, match="jrnn.unroll_batch: scan='associative' runs on the XLA scan only"):
    jrnn.unroll_batch(cell, params, jnp.ones((1, 4, 2)), scan="associative", kernel="cpu")


def test_without_the_extension_the_kernel_is_refused_and_auto_is_the_scan(monkeypatch):
  monkeypatch.setattr(_cpu_kernel, "_load", lambda: "the extension jrnn/_recurrence was not built")
  monkeypatch.setitem(_options.AUTO_KERNEL, "cpu", "cpu")
  cell = jrnn.lstm(3)
  params = cell.init(jax.random.key(0), 2)
  xs = jnp.ones((2, 4, 2))
  assert not jrnn.cpu_kernel_available()
  with pytest.raises(ValueError, match="kernel='cpu' needs jrnn's compiled CPU kernel, which is not available: the"):
    jrnn.unroll_batch(cell, params, xs, kernel="cpu")
  assert jrnn.which_kernel(cell, params, xs) == "xla"
  chex.assert_trees_all_close(jrnn.unroll_batch(cell, params, xs), jrnn.unroll_batch(cell, params, xs, kernel="xla"))


@needs_kernel
def test_on_another_backend_the_kernel_is_refused(monkeypatch):
  monkeypatch.setattr(_cpu_kernel.jax, "default_backend", lambda: "gpu")
  cell = jrnn.gru(3)
  params = cell.init(jax.random.key(0), 2)
  with pytest.raises(ValueError, match="kernel='cpu' runs on a CPU; JAX's default backend is 'gpu'"):
    jrnn.which_kernel(cell, params, jnp.ones((2, 4, 2)), kernel="cpu")


@needs_kernel
def test_which_kernel_and_auto_follow_auto_kernel(monkeypatch):
  cell, params, xs, _ = _setup("bidirectional", T=3)
  assert jrnn.which_kernel(cell, params, xs, kernel="cpu") == "cpu"
  assert jrnn.which_kernel(cell, params, xs, kernel="cpu", vjp="fused", projection="hoisted", unroll=4) == "cpu"
  assert jrnn.which_kernel(cell, params, xs, kernel="xla") == "xla"
  monkeypatch.setitem(_options.AUTO_KERNEL, "cpu", "cpu")
  assert jrnn.which_kernel(cell, params, xs) == "cpu"
  hlo = jax.jit(lambda p, x: jrnn.unroll_batch(cell, p, x)).lower(params, xs).as_text()
  assert hlo.count("jrnn_recurrence_forward") == 2
  # "auto" honours an option of the scan that the caller set, and export's trace (xla_only) takes the scan.
  for option in (dict(vjp="fused"), dict(projection="hoisted"), dict(unroll=4)):
    assert jrnn.which_kernel(cell, params, xs, **option) == "xla", option
  with _options.xla_only():
    assert jrnn.which_kernel(cell, params, xs) == "xla"
  assert jrnn.which_kernel(cell, params, xs) == "cpu"
  one = jax.jit(lambda p, x: jrnn.unroll(cell, p, x)).lower(params, xs[0]).as_text()  # one sequence: the scan
  assert "jrnn_recurrence" not in one
  monkeypatch.delitem(_options.AUTO_KERNEL, "cpu", raising=False)
  assert jrnn.which_kernel(cell, params, xs) == "xla"
  assert "jrnn_recurrence" not in jax.jit(lambda p, x: jrnn.unroll_batch(cell, p, x)).lower(params, xs).as_text()
