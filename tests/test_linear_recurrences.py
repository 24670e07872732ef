"""Linear recurrences (minGRU, minLSTM, LRU): NumPy references, sequential vs associative scan."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import _options
from jrnn import _unroll
from tests import reference as ref

# ---- NumPy float64 references: the papers' equations, written out once more.


def _g(x):
  return np.where(x >= 0, np.maximum(x, 0) + 0.5, ref.sigmoid(x))


def min_gru_step(p, h, x, log_space=False):
  wx, b = (np.asarray(a, np.float64) for a in p)
  H = h.shape[0]
  k = x @ wx + b
  z = ref.sigmoid(k[:H])
  cand = _g(k[H:]) if log_space else k[H:]
  h = (1 - z) * h + z * cand
  return h, h


def min_lstm_step(p, h, x, log_space=False):
  wx, b = (np.asarray(a, np.float64) for a in p)
  H = h.shape[0]
  k = x @ wx + b
  f, i = ref.sigmoid(k[:H]), ref.sigmoid(k[H : 2 * H])
  cand = _g(k[2 * H :]) if log_space else k[2 * H :]
  h = f / (f + i) * h + i / (f + i) * cand
  return h, h


def lru_step(p, x_state, u):
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
  lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
  B, C = p.b_re + 1j * p.b_im, p.c_re + 1j * p.c_im
  x_state = lam * x_state + np.exp(p.gamma_log) * (u @ B)
  return x_state, (x_state @ C).real + u @ p.d


CELLS = {
  "min_gru": (lambda dt: jrnn.min_gru(4, dtype=dt), min_gru_step),
  "min_gru_log": (
    lambda dt: jrnn.min_gru(4, log_space=True, dtype=dt),
    functools.partial(min_gru_step, log_space=True),
  ),
  "min_lstm": (lambda dt: jrnn.min_lstm(4, dtype=dt), min_lstm_step),
  "min_lstm_log": (
    lambda dt: jrnn.min_lstm(4, log_space=True, dtype=dt),
    functools.partial(min_lstm_step, log_space=True),
  ),
  "lru": (lambda dt: jrnn.lru(4, state_size=5, r_min=0.4, r_max=0.95, dtype=dt), lru_step),
}
# The compiled test functions are tiny; LLVM's optimisations only cost compile time here.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
MASK = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1], bool)  # holes in the middle and at the end of a reversed scan
T, I = MASK.shape[0], 3


def _setup(name, dtype):
  make, step = CELLS[name]
  cell = make(dtype)
  params = cell.init(jax.random.key(0), I)
  if hasattr(params, "b"):  # random biases, so a bias applied at the wrong step would show
    params = params._replace(b=0.5 * jax.random.normal(jax.random.key(1), params.b.shape, dtype))
  xs = jax.random.normal(jax.random.key(2), (T, I), dtype)
  c0 = cell.initial_carry(params)
  c0 = c0 + (0.3 * jax.random.normal(jax.random.key(3), c0.shape, dtype)).astype(c0.dtype)  # a nonzero start
  return cell, params, xs, c0, functools.partial(step, params)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_unroll_and_step_match_numpy_reference(x64, name):
  """Both scans and a Python loop over cell.step against the paper's equations in float64."""
  cell, params, xs, c0, step = _setup(name, jnp.float64)
  want_c, want_hs = ref.run(step, np.asarray(c0), np.asarray(xs), MASK, reverse=False)
  both = jit(lambda p, x, c, m: [jrnn.unroll(cell, p, x, c, mask=m, scan=s) for s in ("sequential", "associative")])
  for scan, (c, hs) in zip(("sequential", "associative"), both(params, xs, c0, jnp.asarray(MASK))):
    np.testing.assert_allclose(hs, want_hs, rtol=1e-12, atol=1e-12, err_msg=scan)
    np.testing.assert_allclose(c, want_c, rtol=1e-12, atol=1e-12, err_msg=scan)
  step_fn, c, outs = jit(cell.step), c0, []
  for x in xs:
    c, h = step_fn(params, c, x)
    outs.append(h)
  want_c, want_hs = ref.run(step, np.asarray(c0), np.asarray(xs))
  np.testing.assert_allclose(jnp.stack(outs), want_hs, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(c, want_c, rtol=1e-12, atol=1e-12)


COMBOS = [(masked, reverse) for masked in (False, True) for reverse in (False, True)]


@functools.cache
def _both_scans(name, dtype):
  """(carry, hs, grads) from each algorithm for every mask/reverse combination.

  One compiled function per cell and dtype, shared by the parametrized tests
  (compiling 40 small functions would take most of this file's time budget).
  """
  with jax.enable_x64(dtype == "float64"):
    cell, params, xs, c0, _ = _setup(name, jnp.dtype(dtype))

    def run(scan, mask, reverse, params, c0, xs):
      def loss(params, c0):
        c, hs = jrnn.unroll(cell, params, xs, c0, mask=mask, reverse=reverse, scan=scan)
        w = jnp.cos(jnp.arange(hs.size, dtype=hs.dtype)).reshape(hs.shape)
        return jnp.sum(w * jnp.tanh(hs)) + jnp.sum(jnp.square(jnp.abs(c))), (c, hs)

      (_, (c, hs)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, c0)
      return c, hs, grads

    @jit
    def all_combos(params, c0, xs):
      out = {}
      for masked, reverse in COMBOS:
        mask = jnp.asarray(MASK) if masked else None
        out[masked, reverse] = tuple(run(s, mask, reverse, params, c0, xs) for s in ("sequential", "associative"))
      return out

    return jax.device_get(all_combos(params, c0, xs))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_sequential_equals_associative(name, masked, reverse, dtype):
  """Same hs, final carry and grads (params and initial carry) from both algorithms."""
  seq, assoc = _both_scans(name, dtype)[masked, reverse]
  assert seq[1].dtype == jnp.dtype(dtype)
  tol = 1e-5 if dtype == "float32" else 1e-10
  chex.assert_trees_all_close(assoc, seq, rtol=tol, atol=tol)
  if masked:  # masked rows are exactly zero in both
    np.testing.assert_array_equal(assoc[1][~MASK], 0.0)
    np.testing.assert_array_equal(seq[1][~MASK], 0.0)


def test_log_space_scan_agrees_with_plain_form_on_long_sequences():
  """Heinsen's log-space scan (float32) against the plain recurrence in NumPy float64, T=2000.

  Strongly negative pre-activations make Π a_t underflow float32 within a few
  hundred steps; the log-space form must stay finite and accurate anyway.
  """
  for name in ("min_gru_log", "min_lstm_log"):
    make, step = CELLS[name]
    cell = make(jnp.float32)
    params = cell.init(jax.random.key(0), I)
    params = params._replace(b=params.b - 1.0)
    xs = 2.0 * jax.random.normal(jax.random.key(1), (2000, I), jnp.float32)
    _, hs = jit(lambda p, x, cell=cell: jrnn.unroll(cell, p, x, scan="associative"))(params, xs)
    _, want = ref.run(functools.partial(step, params), np.zeros(4), np.asarray(xs, np.float64))
    chex.assert_tree_all_finite(hs)
    np.testing.assert_allclose(hs, want, rtol=2e-4, atol=1e-5, err_msg=name)


def test_log_coefficients_are_the_logs_of_the_plain_coefficients(x64):
  for name in ("min_gru_log", "min_lstm_log"):
    cell, params, xs, _, _ = _setup(name, jnp.float64)
    log_a, log_b = cell.kind.coefficients(params, cell.kind.project(params, xs))
    _, step = CELLS[name]
    xs64, H = np.asarray(xs), 4
    b = np.stack([step(params, np.zeros(H), x)[0] for x in xs64])  # h=0 gives b
    a = np.stack([step(params, np.ones(H), x)[0] for x in xs64]) - b  # h=1 gives a + b
    np.testing.assert_allclose(jnp.exp(log_b), b, rtol=1e-12)
    np.testing.assert_allclose(jnp.exp(log_a), a, rtol=1e-10)


@pytest.mark.parametrize("r_min, r_max, max_phase", [(0.0, 1.0, 2 * math.pi), (0.9, 0.999, math.pi / 10)])
def test_lru_ring_initialisation(x64, r_min, r_max, max_phase):
  N = 4000
  cell = jrnn.lru(8, state_size=N, r_min=r_min, r_max=r_max, max_phase=max_phase, dtype=jnp.float64)
  params = cell.init(jax.random.key(0), 3)
  lam = np.asarray(jrnn._lru.eigenvalues(params))
  mod = np.abs(lam)
  assert np.all((mod >= r_min) & (mod <= r_max))
  # |λ|² uniform on [r_min², r_max²]: mean and variance of the uniform law, to ~4 standard errors.
  lo, hi = r_min**2, r_max**2
  np.testing.assert_allclose(np.mean(mod**2), (lo + hi) / 2, atol=4 * (hi - lo) / math.sqrt(12 * N))
  np.testing.assert_allclose(np.var(mod**2), (hi - lo) ** 2 / 12, rtol=0.1)
  phase = np.exp(np.asarray(params.theta_log))
  assert np.all((phase >= 0) & (phase <= max_phase))
  np.testing.assert_allclose(np.mean(phase), max_phase / 2, atol=4 * max_phase / math.sqrt(12 * N))
  np.testing.assert_allclose(np.exp(params.gamma_log), np.sqrt(1 - mod**2), rtol=1e-9, atol=1e-12)
  assert cell.initial_carry(params).dtype == jnp.complex128
  assert params.b_re.shape == (3, N) and params.c_re.shape == (N, 8) and params.d.shape == (3, 8)


def test_lru_carry_is_complex64_for_float32_and_output_is_hidden_size():
  cell = jrnn.lru(6, state_size=10)
  params = cell.init(jax.random.key(0), 3)
  carry, hs = jrnn.unroll(cell, params, jnp.ones((5, 3)), scan="associative")
  assert carry.dtype == jnp.complex64 and carry.shape == (10,)
  assert hs.dtype == jnp.float32 and hs.shape == (5, cell.hidden_size) == (5, 6)
  _, want = ref.run(functools.partial(lru_step, params), np.zeros(10, complex), np.ones((5, 3)))
  np.testing.assert_allclose(hs, want, rtol=1e-5, atol=1e-5)


def test_associative_on_a_nonlinear_cell_raises_naming_it():
  cell = jrnn.elman(3)
  params = cell.init(jax.random.key(0), 2)
  with pytest.raises(ValueError, match=r"scan='associative'.*jrnn\.elman is not"):
    jrnn.unroll(cell, params, jnp.ones((4, 2)), scan="associative")
  deep = jrnn.stack([jrnn.min_gru(3), jrnn.gru(3)])
  with pytest.raises(ValueError, match=r"jrnn\.gru is not"):
    jrnn.unroll(deep, deep.init(jax.random.key(0), 2), jnp.ones((4, 2)), scan="associative")
  with pytest.raises(ValueError, match="scan must be one of"):
    jrnn.unroll(cell, params, jnp.ones((4, 2)), scan="parallel")
  # "auto" runs a nonlinear cell sequentially: the same numbers as the default.
  np.testing.assert_array_equal(
    jrnn.unroll(cell, params, jnp.ones((4, 2)), scan="auto")[1],
    jrnn.unroll(cell, params, jnp.ones((4, 2)), scan="sequential")[1],
  )


def test_auto_rule():
  lin, nonlin = jrnn.min_gru(3), jrnn.gru(3)
  threshold = _options.AUTO_MIN_LENGTH[jax.default_backend()]
  auto = jrnn.Options(scan="auto")
  assert _unroll.algorithm(nonlin, auto, 10**6) == "sequential"
  if threshold is None:
    assert _unroll.algorithm(lin, auto, 10**6) == "sequential"
  else:
    assert _unroll.algorithm(lin, auto, threshold - 1) == "sequential"
    assert _unroll.algorithm(lin, auto, threshold) == "associative"


def test_vmap_and_jit_with_masks(x64):
  """A vmapped, jitted associative unroll equals per-sequence sequential unrolls; traced once."""
  cell, params, _, _, _ = _setup("lru", jnp.float64)
  B = 3
  xs = jax.random.normal(jax.random.key(5), (B, T, I), jnp.float64)
  lengths = jnp.array([T, 6, 1])
  masks = jnp.arange(T)[None, :] < lengths[:, None]

  @jit
  @chex.assert_max_traces(n=1)
  def batched(params, xs, masks):
    return jax.vmap(lambda x, m: jrnn.unroll(cell, params, x, mask=m, scan="associative"))(xs, masks)

  carries, hs = batched(params, xs, masks)
  batched(params, xs + 1.0, masks)  # no retrace
  for b in range(B):
    c, h = jrnn.unroll(cell, params, xs[b], mask=masks[b], scan="sequential")
    np.testing.assert_allclose(hs[b], h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(carries[b], c, rtol=1e-10, atol=1e-12)
    # The final carry of a right-padded sequence is the carry at its last real step.
    c_short, _ = jrnn.unroll(cell, params, xs[b, : int(lengths[b])], scan="sequential")
    np.testing.assert_allclose(carries[b], c_short, rtol=1e-10, atol=1e-12)


def test_stacked_blocks_and_bidirectional_pass_scan_through(x64):
  """Deep minGRU/LRU blocks with GLU mixing: associative == sequential == a loop over step."""
  f64 = jnp.float64
  first = jrnn.linear_recurrent_block(jrnn.min_gru(4, dtype=f64), dtype=f64)
  second = jrnn.linear_recurrent_block(jrnn.lru(4, state_size=3, dtype=f64), dtype=f64)
  deep = jrnn.stack([first, second])
  params = deep.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, I), f64)
  (c_seq, hs_seq), (c_par, hs_par) = jit(
    lambda p, x: [jrnn.unroll(deep, p, x, scan=s) for s in ("sequential", "associative")]
  )(params, xs)
  chex.assert_trees_all_close((c_par, hs_par), (c_seq, hs_seq), rtol=1e-10, atol=1e-12)
  step_fn, c, outs = jit(deep.step), deep.initial_carry(params), []
  for x in xs:
    c, h = step_fn(params, c, x)
    outs.append(h)
  chex.assert_trees_all_close((c_seq, hs_seq), (c, jnp.stack(outs)), rtol=1e-10, atol=1e-12)
  # The block's equation on the second layer (input 4 == hidden 4, so with the skip term).
  _, u1 = jrnn.unroll(first, params[0], xs)
  u1, p2 = np.asarray(u1), params[1]
  ln = (u1 - u1.mean(-1, keepdims=True)) / np.sqrt(u1.var(-1, keepdims=True) + 1e-5)
  _, states = ref.run(functools.partial(lru_step, p2.cell), np.zeros(3, complex), ln)
  y = states @ np.asarray(p2.w) + np.asarray(p2.b)
  want = u1 + y[:, :4] * ref.sigmoid(y[:, 4:])
  np.testing.assert_allclose(hs_seq, want, rtol=1e-10, atol=1e-12)

  bi = jrnn.bidirectional(jrnn.min_lstm(3, dtype=jnp.float64))
  bp = bi.init(jax.random.key(2), I)
  mask = jnp.asarray(MASK)
  seq, par = jit(lambda p, x, m: [jrnn.unroll(bi, p, x, mask=m, scan=s) for s in ("sequential", "associative")])(
    bp, xs, mask
  )
  chex.assert_trees_all_close(par, seq, rtol=1e-10, atol=1e-12)
  _, want_fwd = ref.run(functools.partial(min_lstm_step, bp.forward), np.zeros(3), np.asarray(xs), MASK)
  _, want_bwd = ref.run(functools.partial(min_lstm_step, bp.backward), np.zeros(3), np.asarray(xs), MASK, reverse=True)
  np.testing.assert_allclose(seq[1], np.concatenate([want_fwd, want_bwd], -1), rtol=1e-10, atol=1e-12)


def test_one_to_many_steps_a_linear_cell(x64):
  cell, params, _, _, step = _setup("min_gru", jnp.float64)
  head = jrnn.linear(I, dtype=jnp.float64)
  hp = head.init(jax.random.key(4), 4)
  x0 = jnp.array([0.5, -1.0, 0.2])
  _, ys, _ = jrnn.one_to_many(cell, params, head, hp, x0, 6)
  h, x, want = np.zeros(4), np.asarray(x0), []
  for _ in range(6):
    h, _ = step(h, x)
    x = h @ np.asarray(hp.w) + np.asarray(hp.b)
    want.append(x)
  np.testing.assert_allclose(ys, np.stack(want), rtol=1e-12, atol=1e-12)
