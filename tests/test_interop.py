"""jrnn.interop: exact parity with PyTorch 2.13's nn.RNN, nn.GRU and nn.LSTM (proj_size = 0 and > 0).

Every parity test converts a torch module with random weights and non-zero
random biases, runs the same inputs through both libraries and compares
outputs, final states (torch's h_n / c_n layout) and the input gradient of
sum(out * u) + sum(h_n * v) (+ sum(c_n * w)). The perturbation tests show that
a wrong gate order, bias or transpose in the conversion would fail them.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jrnn
from jrnn import interop
from jrnn._lstmp import LSTMPCarry
from jrnn._lstmp import LSTMPParams

torch.set_num_threads(1)
# torch's CPU LSTM with proj_size says once that it runs without oneDNN (its own slower path): not a jrnn matter.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")

MODES = ("tanh", "relu", "gru", "lstm", "lstmp")  # lstmp: nn.LSTM(proj_size=P), jrnn.lstmp
# (num_layers, bidirectional, batch_first): batch_first changes nothing in the
# weights, so it is varied along the way.
STRUCTURES = ((1, False, False), (2, False, True), (1, True, True), (2, True, False))
STRUCTURE_IDS = ("L1", "L2", "bi", "L2-bi")
B, T, I, H = 3, 6, 4, 5
P = 3  # proj_size of the "lstmp" modules: neither I nor H, so a wrong shape cannot pass
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def make_module(mode, num_layers=1, bidirectional=False, *, batch_first=False, bias=True, dtype=torch.float32, seed=0):
  """A torch module with random weights and clearly non-zero random biases."""
  torch.manual_seed(seed)
  kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
  if mode in ("tanh", "relu"):
    m = torch.nn.RNN(I, H, nonlinearity=mode, **kw)
  elif mode == "gru":
    m = torch.nn.GRU(I, H, **kw)
  else:
    m = torch.nn.LSTM(I, H, proj_size=P if mode == "lstmp" else 0, **kw)
  with torch.no_grad():
    for name, p in m.named_parameters():
      p.normal_(0.0, 0.5 if name.startswith("bias") else 0.4)
  return m.to(dtype)


def rel_err(got, want):
  """max |got - want| / max |want|."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def torch_layout(carry, m):
  """The test's own statement of torch's h_n layout: row layer * D + direction."""
  layers = list(carry) if m.num_layers > 1 else [carry]
  units = []
  for layer in layers:
    units += [layer.forward, layer.backward] if m.bidirectional else [layer]
  if isinstance(m, torch.nn.LSTM):
    return jnp.stack([u.h for u in units]), jnp.stack([u.c for u in units])
  return jnp.stack(units), None


def out_size(m):
  """The size of torch's h: proj_size for an LSTM with projections, else hidden_size."""
  return getattr(m, "proj_size", 0) or H


def random_inputs(m, seed=1):
  """Inputs [B, T, I] and cotangents for out [B, T, D*R] and h_n [L*D, B, R], c_n [L*D, B, H] (R = out_size)."""
  rng = np.random.default_rng(seed)
  dtype = np.float64 if m.weight_ih_l0.dtype == torch.float64 else np.float32
  D = 2 if m.bidirectional else 1
  R = out_size(m)
  sizes = ((B, T, I), (B, T, D * R), (m.num_layers * D, B, R), (m.num_layers * D, B, H))
  return [rng.normal(size=s).astype(dtype) for s in sizes]


def torch_run(m, x, u, v, w, hx):
  """Torch's out [B, T, D*H], h_n, c_n (or None) and d loss / d x, x: [B, T, I]."""
  xt = torch.tensor(x, requires_grad=True)
  out, state = m(xt if m.batch_first else xt.transpose(0, 1), hx)
  out = out if m.batch_first else out.transpose(0, 1)
  h_n, c_n = state if isinstance(m, torch.nn.LSTM) else (state, None)
  loss = (out * torch.from_numpy(u)).sum() + (h_n * torch.from_numpy(v)).sum()
  if c_n is not None:
    loss = loss + (c_n * torch.from_numpy(w)).sum()
  loss.backward()
  c_n = None if c_n is None else c_n.detach().numpy()
  return out.detach().numpy(), h_n.detach().numpy(), c_n, xt.grad.numpy()


_COMPILED = {}


def _compiled_run(m):
  """A jitted (params, xs, u, v, w, carry) -> ((loss, aux), grad) for m's architecture.

  Cached by architecture, so the perturbation tests reuse one compilation.
  """
  key = (type(m).__name__, m.mode, m.proj_size, m.num_layers, m.bidirectional)
  if key not in _COMPILED:
    cell = interop.cell_from_torch(m)

    def run(params, xs, u, v, w, carry):
      def loss(xs):
        c, hs = jax.vmap(lambda s, c0: jrnn.unroll(cell, params, s, c0))(xs, carry)
        h_n, c_n = torch_layout(c, m)
        total = jnp.sum(hs * u) + jnp.sum(h_n * v)
        if c_n is not None:
          total = total + jnp.sum(c_n * w)
        return total, (hs, h_n, c_n, c)

      return jax.value_and_grad(loss, has_aux=True)(xs)

    _COMPILED[key] = jax.jit(run)
  return _COMPILED[key]


def jrnn_run(m, params, x, u, v, w, carry):
  """jrnn's out, h_n, c_n, d loss / d x and the raw (batched) final carry."""
  (_, (hs, h_n, c_n, c)), gx = _compiled_run(m)(params, jnp.asarray(x), u, v, w, carry)
  return hs, h_n, c_n, gx, c


def random_state(m, seed=2):
  """A random torch initial state hx: h_0 [L*D, B, R], or (h_0, c_0 [L*D, B, H]) for an LSTM."""
  rng = np.random.default_rng(seed)
  dtype = np.float64 if m.weight_ih_l0.dtype == torch.float64 else np.float32
  LD = m.num_layers * (2 if m.bidirectional else 1)
  h0 = torch.from_numpy(rng.normal(size=(LD, B, out_size(m))).astype(dtype))
  return (h0, torch.from_numpy(rng.normal(size=(LD, B, H)).astype(dtype))) if isinstance(m, torch.nn.LSTM) else h0


def parity_errors(m, params=None):
  """Relative errors of jrnn (with ``params``, default from_torch(m)) against m.

  Both start from the same random non-zero initial state (torch's hx, converted
  by carry_from_torch); the zero default state is checked by the packed test.
  """
  params = interop.from_torch(m) if params is None else params
  x, u, v, w = random_inputs(m)
  hx = random_state(m)
  carry = interop.carry_from_torch(m, hx)
  # carry_from_torch turns [L*D, B, H] into leaves [B, H]: vmap over their axis 0.
  want = torch_run(m, x, u, v, w, hx)
  got = jrnn_run(m, params, x, u, v, w, carry)
  errs = {"out": rel_err(got[0], want[0]), "h_n": rel_err(got[1], want[1]), "grad_x": rel_err(got[3], want[3])}
  if want[2] is not None:
    errs["c_n"] = rel_err(got[2], want[2])
  return errs, got


def assert_parity(m, tol, params=None):
  errs, got = parity_errors(m, params)
  assert max(errs.values()) < tol, errs
  return got


def test_import_jrnn_does_not_import_torch():
  code = "import jrnn, jrnn.interop, sys; assert 'torch' not in sys.modules, 'torch imported'"
  subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("structure", STRUCTURES, ids=STRUCTURE_IDS)
@pytest.mark.parametrize("mode", MODES)
def test_parity_float32(mode, structure):
  num_layers, bidirectional, batch_first = structure
  m = make_module(mode, num_layers, bidirectional, batch_first=batch_first)
  params = interop.from_torch(m)
  assert {l.dtype for l in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
  _, _, _, _, carry = assert_parity(m, TOL[torch.float32], params=params)
  # carry_to_torch writes exactly the layout the test states in torch_layout.
  h_n, c_n = torch_layout(carry, m)
  state = interop.carry_to_torch(carry, m)
  if c_n is None:
    np.testing.assert_array_equal(state.numpy(), np.asarray(h_n))
  else:
    np.testing.assert_array_equal(state[0].numpy(), np.asarray(h_n))
    np.testing.assert_array_equal(state[1].numpy(), np.asarray(c_n))


@pytest.mark.parametrize("structure", (STRUCTURES[0], STRUCTURES[3]), ids=("L1", "L2-bi"))
@pytest.mark.parametrize("mode", MODES)
def test_parity_float64(x64, mode, structure):
  num_layers, bidirectional, batch_first = structure
  m = make_module(mode, num_layers, bidirectional, batch_first=batch_first, dtype=torch.float64)
  params = interop.from_torch(m)
  assert {l.dtype for l in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float64)}
  assert_parity(m, TOL[torch.float64], params=params)


@pytest.mark.parametrize("mode", ("tanh", "gru", "lstm", "lstmp"))
def test_parity_bias_false(mode):
  m = make_module(mode, 2, False, bias=False)
  params = interop.from_torch(m)
  for p in params:
    assert not np.any(np.asarray(p.b))
  assert_parity(m, TOL[torch.float32], params=params)


@pytest.mark.parametrize("mode", ("tanh", "relu", "gru", "lstm"))  # torch's LSTMCell has no proj_size
def test_cell_modules_match_torch_cells(mode):
  """torch.nn.RNNCell / GRUCell / LSTMCell stepped in Python vs jrnn.unroll."""
  torch.manual_seed(0)
  if mode in ("tanh", "relu"):
    m = torch.nn.RNNCell(I, H, nonlinearity=mode)
  else:
    m = (torch.nn.GRUCell if mode == "gru" else torch.nn.LSTMCell)(I, H)
  with torch.no_grad():
    for p in m.parameters():
      p.normal_(0.0, 0.5)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B, T, I)).astype(np.float32)
  h0 = rng.normal(size=(B, H)).astype(np.float32)
  hx = (torch.from_numpy(h0), torch.from_numpy(-h0)) if mode == "lstm" else torch.from_numpy(h0)
  state, outs = hx, []
  with torch.no_grad():
    for t in range(T):
      state = m(torch.from_numpy(x[:, t]), state)
      outs.append((state[0] if mode == "lstm" else state).numpy())
  cell, params = interop.cell_from_torch(m), interop.from_torch(m)
  carry, hs = jax.vmap(lambda s, c: jrnn.unroll(cell, params, s, c))(jnp.asarray(x), interop.carry_from_torch(m, hx))
  assert rel_err(hs, np.stack(outs, axis=1)) < 1e-5
  got = interop.carry_to_torch(carry, m)
  for g, s in zip(got if mode == "lstm" else (got,), state if mode == "lstm" else (state,)):
    assert rel_err(g.numpy(), s.numpy()) < 1e-5


@pytest.mark.parametrize("mode", ("tanh", "gru", "lstm", "lstmp"))
def test_masked_matches_packed_sequence(mode):
  """jrnn's mask on right-padded sequences == torch's pack_padded_sequence."""
  m = make_module(mode, 2, True, batch_first=True, seed=5)
  lengths = np.array([T, 3, 1])
  x = np.random.default_rng(2).normal(size=(B, T, I)).astype(np.float32)
  mask = np.arange(T)[None, :] < lengths[:, None]
  x = np.where(mask[:, :, None], x, np.float32(0.0)).astype(np.float32)
  packed = torch.nn.utils.rnn.pack_padded_sequence(
    torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
  )
  with torch.no_grad():
    out, state = m(packed)
  out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
  cell, params = interop.cell_from_torch(m), interop.from_torch(m)
  carry, hs = jax.vmap(lambda s, k: jrnn.unroll(cell, params, s, mask=k))(jnp.asarray(x), jnp.asarray(mask))
  assert rel_err(hs, out.numpy()) < 1e-5
  got = interop.carry_to_torch(carry, m)
  lstm = mode.startswith("lstm")
  for g, s in zip(got if lstm else (got,), state if lstm else (state,)):
    assert rel_err(g.numpy(), s.numpy()) < 1e-5


# --- The tests above would catch a wrong gate order, bias or transpose. ------


def _swap(a, i, j, n):
  """Swaps gate blocks i and j (of width n) along the last axis."""
  a = np.array(a)
  bi, bj = slice(i * n, (i + 1) * n), slice(j * n, (j + 1) * n)
  a[..., bi], a[..., bj] = a[..., bj].copy(), a[..., bi].copy()
  return jnp.asarray(a)


def _perturbations(mode):
  """Conversion bugs one might write, as functions of one layer's params and torch module."""
  sw = lambda i, j: lambda p, m: p._replace(wx=_swap(p.wx, i, j, H), wh=_swap(p.wh, i, j, H), b=_swap(p.b, i, j, H))
  G = 3 if mode == "gru" else 4
  common = {
    # Each H x H gate block of W_hh transposed (the full [G*H, H] cannot be, by shape).
    "W_hh blocks not transposed": lambda p, m: p._replace(
      wh=jnp.concatenate([p.wh[:, k * H : (k + 1) * H].T for k in range(G)], axis=1)
    ),
    "b_hh dropped": lambda p, m: p._replace(b=jnp.asarray(m.bias_ih_l0.detach().numpy())),
  }
  if mode == "gru":
    return {
      **common,
      "r<->z": sw(0, 1),
      "z<->n": sw(1, 2),
      "r<->n": sw(0, 2),
      "b_hn merged into b_n": lambda p, m: p._replace(b=p.b.at[2 * H :].add(p.bhn), bhn=jnp.zeros_like(p.bhn)),
      "b_hn sign": lambda p, m: p._replace(bhn=-p.bhn),
      "n bias slice off by 0.1": lambda p, m: p._replace(b=p.b.at[2 * H :].add(0.1)),
      "z gate 1-z": lambda p, m: p._replace(
        wx=p.wx.at[:, H : 2 * H].multiply(-1.0),
        wh=p.wh.at[:, H : 2 * H].multiply(-1.0),
        b=p.b.at[H : 2 * H].multiply(-1.0),
      ),
    }
  return {
    **common,
    "i<->f": sw(0, 1),
    "f<->g": sw(1, 2),
    "g<->o": sw(2, 3),
    "i<->o": sw(0, 3),
    "forget bias +1 twice": lambda p, m: p._replace(b=p.b.at[H : 2 * H].add(1.0)),
    "o bias slice off by 0.1": lambda p, m: p._replace(b=p.b.at[3 * H :].add(0.1)),
  }


@pytest.mark.parametrize("mode", ("gru", "lstm"))
def test_perturbed_gate_breaks_parity(mode):
  """Each plausible conversion bug, applied to layer 0 only, breaks parity by orders of magnitude."""
  m = make_module(mode, 1, False, seed=11)
  params = interop.from_torch(m)
  errs, _ = parity_errors(m, params=params)
  assert max(errs.values()) < TOL[torch.float32], errs
  for name, bug in _perturbations(mode).items():
    errs, _ = parity_errors(m, params=bug(params, m))
    # At least 100x the tolerance (measured: 1.4e-2 to 2 for these bugs).
    assert min(errs.values()) > 1e-3, (name, errs)


# --- Round trips. -------------------------------------------------------------


def _random_jrnn_params(m, seed):
  """Params for m's cell (from cell.init's structure), every leaf random normal."""
  params = jax.eval_shape(lambda k: interop.cell_from_torch(m).init(k, I), jax.random.key(0))
  leaves, tree = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_unflatten(tree, [jnp.asarray(rng.normal(size=l.shape).astype(l.dtype)) for l in leaves])


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("structure", STRUCTURES, ids=STRUCTURE_IDS)
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_params_exact(mode, structure):
  """from_torch(to_torch(params, m)) == params, bit for bit, with every bias non-zero."""
  m = make_module(mode, *structure[:2])
  params = _random_jrnn_params(m, seed=4)
  assert interop.to_torch(params, m) is m
  _assert_trees_equal(interop.from_torch(m), params)


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_module_same_function(mode):
  """to_torch(from_torch(m), m2) has m's weights and merged biases and computes m's function."""
  m = make_module(mode, 2, True, seed=0)
  m2 = make_module(mode, 2, True, seed=9)
  interop.to_torch(interop.from_torch(m), m2)
  _assert_trees_equal(interop.from_torch(m2), interop.from_torch(m))
  p1, p2 = dict(m.named_parameters()), dict(m2.named_parameters())
  for name in p1:
    if name.startswith("weight"):
      assert torch.equal(p1[name], p2[name]), name
    elif name.startswith("bias_ih"):
      want = p1[name] + p1[name.replace("_ih", "_hh")]
      if mode == "gru":
        want[2 * H :] = p1[name][2 * H :]
      assert torch.equal(p2[name], want), name
    else:
      want = torch.zeros_like(p1[name])
      if mode == "gru":
        want[2 * H :] = p1[name][2 * H :]
      assert torch.equal(p2[name], want), name
  x = torch.from_numpy(np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32))
  with torch.no_grad():
    (o1, s1), (o2, s2) = m(x), m2(x)
  assert rel_err(o2.numpy(), o1.numpy()) < 1e-6
  s1, s2 = (s1, s2) if mode.startswith("lstm") else ((s1,), (s2,))
  for a, b in zip(s2, s1):
    assert rel_err(a.numpy(), b.numpy()) < 1e-6


def test_round_trip_float64_into_float64(x64):
  m = make_module("lstm", 2, True, dtype=torch.float64)
  params = _random_jrnn_params(m, seed=2)  # cell_from_torch's cell has the module's dtype
  assert {l.dtype for l in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float64)}
  _assert_trees_equal(interop.from_torch(interop.to_torch(params, m)), params)


def test_carry_round_trip_exact():
  m = make_module("lstm", 2, True)
  rng = np.random.default_rng(0)
  hx = tuple(torch.from_numpy(rng.normal(size=(4, B, H)).astype(np.float32)) for _ in range(2))
  carry = interop.carry_from_torch(m, hx)
  assert isinstance(carry, tuple) and isinstance(carry[1], jrnn.BidirectionalCarry)
  assert isinstance(carry[1].backward, jrnn.LSTMCarry)
  np.testing.assert_array_equal(np.asarray(carry[1].backward.c), hx[1][3].numpy())
  back = interop.carry_to_torch(carry, m)
  assert torch.equal(back[0], hx[0]) and torch.equal(back[1], hx[1])


# --- Errors. ----------------------------------------------------------------


def test_lstm_projection_converts_to_lstmp():
  """proj_size > 0 gives jrnn.lstmp: wr = weight_hr^T, wh [P, 4H], a later layer's wx [D*P, 4H], h [P], c [H]."""
  m = make_module("lstmp", 2, True)
  cell, params = interop.cell_from_torch(m), interop.from_torch(m)
  assert cell.hidden_size == 2 * P
  layer = params[1].backward
  assert isinstance(layer, LSTMPParams)
  assert (layer.wx.shape, layer.wh.shape, layer.wr.shape) == ((2 * P, 4 * H), (P, 4 * H), (H, P))
  np.testing.assert_array_equal(np.asarray(layer.wr), m.weight_hr_l1_reverse.detach().numpy().T)
  hx = random_state(m)
  carry = interop.carry_from_torch(m, hx)
  assert isinstance(carry[1].backward, LSTMPCarry) and carry[1].backward.h.shape == (B, P)
  back = interop.carry_to_torch(carry, m)
  assert torch.equal(back[0], hx[0]) and torch.equal(back[1], hx[1])
  with pytest.raises(ValueError, match="LSTMPParams"):
    interop.to_torch(interop.from_torch(make_module("lstm", 2, True)), m)
  with pytest.raises(ValueError, match="LSTMPCarry"):
    plain = make_module("lstm", 2, True)
    interop.carry_to_torch(interop.carry_from_torch(plain, random_state(plain)), m)
  with pytest.raises(ValueError, match=r"expected \[4, \*batch, 3\]"):
    interop.carry_from_torch(m, random_state(make_module("lstm", 2, True)))


def test_perturbed_lstmp_projection_breaks_parity():
  """A projection that is transposed-by-permutation or dropped, or a gate swap, breaks LSTMP parity."""
  m = make_module("lstmp", 1, False, seed=11)
  params = interop.from_torch(m)
  errs, _ = parity_errors(m, params=params)
  assert max(errs.values()) < TOL[torch.float32], errs
  bugs = {
    "W_hr rows reversed": lambda p: p._replace(wr=p.wr[::-1]),
    "W_hr columns reversed": lambda p: p._replace(wr=p.wr[:, ::-1]),
    "i<->f": lambda p: p._replace(wx=_swap(p.wx, 0, 1, H), wh=_swap(p.wh, 0, 1, H), b=_swap(p.b, 0, 1, H)),
    "b_hh dropped": lambda p: p._replace(b=jnp.asarray(m.bias_ih_l0.detach().numpy())),
  }
  for name, bug in bugs.items():
    errs, _ = parity_errors(m, params=bug(params))
    assert min(errs.values()) > 1e-3, (name, errs)


def test_rejects_other_modules():
  with pytest.raises(TypeError, match="torch.nn.RNN, GRU or LSTM"):
    interop.from_torch(torch.nn.Linear(I, H))


def test_float64_module_needs_x64():
  if jax.config.jax_enable_x64:
    pytest.fail("x64 must be off outside the x64 fixture")
  with pytest.raises(ValueError, match="jax_enable_x64"):
    interop.from_torch(make_module("gru", dtype=torch.float64))


def test_to_torch_rejects_mismatched_params():
  m = make_module("gru", 2, True)
  one_layer = interop.from_torch(make_module("gru", 1, True))
  with pytest.raises(ValueError, match="num_layers=2"):
    interop.to_torch(one_layer, m)
  with pytest.raises(ValueError, match="bidirectional"):
    interop.to_torch(interop.from_torch(make_module("gru", 2, False)), m)
  with pytest.raises(ValueError, match="GRUParams"):
    interop.to_torch(interop.from_torch(make_module("lstm", 2, True)), m)
  wrong = interop.from_torch(torch.nn.GRU(I + 1, H, num_layers=2, bidirectional=True))
  with pytest.raises(ValueError, match="shape"):
    interop.to_torch(wrong, m)
  before = [p.clone() for p in m.parameters()]
  with pytest.raises(ValueError):
    interop.to_torch(wrong, m)
  assert all(torch.equal(a, b) for a, b in zip(before, m.parameters())), "partial write"


def test_to_torch_bias_false():
  m = make_module("lstm", 1, False, bias=False)
  params = _random_jrnn_params(m, seed=0)
  with pytest.raises(ValueError, match="bias=False"):
    interop.to_torch(params, m)
  params = params._replace(b=jnp.zeros_like(params.b))
  _assert_trees_equal(interop.from_torch(interop.to_torch(params, m)), params)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=("bfloat16", "float16"))
def test_low_precision_dtype_kept_and_round_trip_exact(dtype):
  m = make_module("gru", 2, True).to(dtype)
  params = interop.from_torch(m)
  assert {l.dtype for l in jax.tree_util.tree_leaves(params)} == {jnp.dtype(str(dtype).removeprefix("torch."))}
  np.testing.assert_array_equal(
    np.asarray(params[1].backward.wh, np.float32), m.weight_hh_l1_reverse.detach().float().numpy().T
  )
  m2 = make_module("gru", 2, True, seed=1).to(dtype)
  _assert_trees_equal(interop.from_torch(interop.to_torch(params, m2)), params)
