"""Backpropagation through time for the Elman network, written out by hand.

jrnn trains with ``jax.grad`` through ``lax.scan``. This module computes the
same gradients the way the seeds derive them: a forward pass that stores every
pre-activation ``zₜ`` and state ``sₜ``, then an explicit backward ``lax.scan``
over the error recursion, accumulating each weight's gradient as a sum over
time of outer products. No ``jax.grad`` is used here, so either one is an
oracle for the other: ``tests/test_bptt.py`` asserts, in float64, that the
losses agree to a relative 1e-12 and the gradients to an absolute 1e-10
(measured on those test problems: 2.4e-16 and 1.8e-15).

The network (weights shaped (in, out) and applied as ``x @ W``, as everywhere
in jrnn; the seeds write the transposes)::

  zₜ = xₜ Wx + sₜ₋₁ Ws + b              sₜ = φ(zₜ)        (state, t = 1 … T)
  oₜ = sₜ Wy + by                       yₜ = ψ(oₜ)        (output)
  L  = c Σₜ ℓ(yₜ, dₜ)                   c = 1/T ("mean") or 1 ("sum")

The backward pass, with εₜ = ∂L/∂oₜ and δₜ = ∂L/∂zₜ::

  δₜ = (εₜ Wyᵀ + δₜ₊₁ Wsᵀ) ⊙ φ'(zₜ),    δ_{T+1} = 0
  ∂L/∂Wy = Σₜ sₜᵀ εₜ          ∂L/∂by = Σₜ εₜ
  ∂L/∂Wx = Σₜ xₜᵀ δₜ          ∂L/∂Ws = Σₜ sₜ₋₁ᵀ δₜ          ∂L/∂b = Σₜ δₜ

where ``aᵀ b`` of two row vectors is their outer product.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jrnn import _bptt_checks
from jrnn import _elman
from jrnn import _linear

__all__ = (
  "ElmanNetParams",
  "elman_bptt",
)

# The Elman network's params x → s → y, ``ModelParams(cell=ElmanParams, head=LinearParams)``:
# the seeds' Wx, Ws and state bias in ``cell``, Wy and the output bias in ``head``.
ElmanNetParams = _linear.ModelParams
_FN = _bptt_checks.FN


def _phi(activation, z):
  if activation == "tanh":
    return jnp.tanh(z)
  if activation == "sigmoid":
    return jax.nn.sigmoid(z)
  return jax.nn.relu(z)


def _dphi(activation, z, s):
  """φ'(z), from the stored pre-activation z and state s = φ(z)."""
  if activation == "tanh":
    return 1 - s * s
  if activation == "sigmoid":
    return s * (1 - s)
  return (z > 0).astype(z.dtype)


def _output_error(output, loss, o, targets, scale):
  """Per-step losses ``ℓₜ [T]`` and output errors ``εₜ = ∂L/∂oₜ [T, O]`` (scale c included)."""
  n = o.shape[-1]
  if output == "linear":
    y = o
  elif output == "sigmoid":
    y = jax.nn.sigmoid(o)
  else:
    y = jax.nn.softmax(o, axis=-1)
  if loss == "mse":
    d = targets
    per_step = jnp.sum(jnp.square(y - d), axis=-1) / n
    g = 2 * (y - d) / n  # ∂ℓ/∂y
    if output == "linear":
      eps = g
    elif output == "sigmoid":
      eps = g * y * (1 - y)  # σ' = y(1 - y), elementwise
    else:
      eps = y * (g - jnp.sum(g * y, axis=-1, keepdims=True))  # softmax Jacobian: diag(y) - y yᵀ
  elif output == "softmax":  # categorical cross-entropy, integer labels
    onehot = jax.nn.one_hot(targets, n, dtype=o.dtype)
    per_step = -jnp.sum(onehot * jax.nn.log_softmax(o, axis=-1), axis=-1)
    eps = y - onehot
  else:  # sigmoid: binary cross-entropy per output
    d = targets
    # log y = -softplus(-o) and log(1 - y) = -softplus(o), stable for large |o|.
    per_step = jnp.sum(d * jax.nn.softplus(-o) + (1 - d) * jax.nn.softplus(o), axis=-1)
    eps = y - d
  return per_step, scale * eps


def elman_bptt(
  params: ElmanNetParams,
  xs: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  s0: jax.typing.ArrayLike | None = None,
  *,
  activation: str = "tanh",
  output: str = "linear",
  loss: str = "mse",
  reduction: str = "mean",
  truncate: int | None = None,
) -> tuple[jax.Array, ElmanNetParams]:
  """The loss of the Elman network and its gradients, by hand-written BPTT.

  Forward (stored for the backward pass), t = 1 … T::

    zₜ = xₜ Wx + sₜ₋₁ Ws + b,   sₜ = φ(zₜ),   oₜ = sₜ Wy + by,   yₜ = ψ(oₜ)

  with φ = ``activation`` (tanh, sigmoid or ReLU) and ψ = ``output``
  (identity, logistic sigmoid, or softmax over the O outputs). The loss:

  * ``loss="mse"``: ``ℓₜ = (1/O) Σᵢ (yₜᵢ − dₜᵢ)²``, targets ``dₜ`` float
    ``[T, O]`` (the seeds' eq. 6: with ``reduction="mean"`` this is
    :func:`jrnn.losses.mse`);
  * ``loss="cross_entropy"`` with ``output="softmax"``:
    ``ℓₜ = −log yₜ[kₜ]``, targets integer labels ``kₜ`` ``[T]``
    (:func:`jrnn.losses.softmax_cross_entropy` on the logits ``oₜ``);
  * ``loss="cross_entropy"`` with ``output="sigmoid"``: binary cross-entropy
    summed over the outputs, ``ℓₜ = −Σᵢ dₜᵢ log yₜᵢ + (1 − dₜᵢ) log(1 − yₜᵢ)``,
    targets float ``[T, O]`` in [0, 1]. (Cross-entropy on a linear output is
    refused: it needs probabilities.)

  and ``L = c Σₜ ℓₜ`` with ``c = 1/T`` for ``reduction="mean"`` (the seeds'
  average over time) or ``c = 1`` for ``"sum"``.

  Backward. The output error ``εₜ = ∂L/∂oₜ = c (∂ℓₜ/∂yₜ) ∂yₜ/∂oₜ`` is

  * linear + MSE: ``(2c/O)(yₜ − dₜ)``;
  * sigmoid + MSE (the seeds' 2-3-2 network): ``(2c/O)(yₜ − dₜ) ⊙ yₜ ⊙ (1 − yₜ)``;
  * softmax + MSE: ``yₜ ⊙ (gₜ − ⟨gₜ, yₜ⟩)`` with ``gₜ = (2c/O)(yₜ − dₜ)``;
  * softmax + cross-entropy, sigmoid + binary cross-entropy: ``c (yₜ − dₜ)``
    (``dₜ`` the one-hot of ``kₜ`` for softmax).

  The state error ``δₜ = ∂L/∂zₜ`` runs backwards in a ``lax.scan``::

    δₜ = (εₜ Wyᵀ + δₜ₊₁ Wsᵀ) ⊙ φ'(zₜ),    δ_{T+1} = 0

  with ``φ'(z) = 1 − s²`` (tanh), ``s(1 − s)`` (sigmoid), ``[z > 0]`` (ReLU),
  and each gradient is a sum over time of outer products, accumulated in the
  same scan::

    ∂L/∂Wy = Σₜ sₜᵀ εₜ,   ∂L/∂by = Σₜ εₜ,
    ∂L/∂Wx = Σₜ xₜᵀ δₜ,   ∂L/∂Ws = Σₜ sₜ₋₁ᵀ δₜ,   ∂L/∂b = Σₜ δₜ.

  Truncated BPTT (``truncate=k``): the error of ``ℓₜ`` flows back through at
  most ``k`` state transitions, i.e. it reaches the pre-activations
  ``zₜ, zₜ₋₁, …, zₜ₋ₖ₊₁`` and stops there (``sₜ₋ₖ`` is treated as a
  constant). With ``δ^{(t)}_τ`` the error at ``z_τ`` that is due to ``ℓₜ``::

    δ^{(t)}_t = εₜ Wyᵀ ⊙ φ'(zₜ),   δ^{(t)}_τ = δ^{(t)}_{τ+1} Wsᵀ ⊙ φ'(z_τ)   for t − k < τ < t,
    δ_τ = Σ_{t = τ}^{τ+k−1} δ^{(t)}_τ

  and the weight gradients are the sums above with this ``δ_τ``. The backward
  scan carries the ``k`` errors ``δ^{(τ)}_τ … δ^{(τ+k−1)}_τ`` in flight (cost
  ``O(T k H²)``). ``truncate >= T`` gives full BPTT; ``truncate=1`` keeps only
  the direct dependence of each ``zₜ`` on the weights. The head's gradients do
  not depend on ``k``.

  Args:
    params: :class:`ElmanNetParams` ``(cell, head)``, or a pair
      ``(jrnn.ElmanParams, jrnn.LinearParams)``.
    xs: inputs ``[T, input_size]``, floating; cast to the params' dtype.
    targets: ``[T, output_size]`` floats, or ``[T]`` integer labels for
      ``output="softmax", loss="cross_entropy"``.
    s0: the initial state ``[hidden_size]`` (zeros when ``None``); treated as
      a constant.
    activation: the state nonlinearity φ: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
    output: the output nonlinearity ψ: ``"linear"``, ``"sigmoid"`` or ``"softmax"``.
    loss: ``"mse"`` or ``"cross_entropy"``.
    reduction: ``"mean"`` (``c = 1/T``) or ``"sum"`` (``c = 1``) over time.
    truncate: ``None`` for full BPTT, or ``k >= 1`` (see above).

  Returns:
    ``(loss, grads)``: the scalar loss ``L`` and an :class:`ElmanNetParams` of
    gradients with the params' structure and dtype.

  Example:
    The seeds' 2-3-2 network; the gradients equal ``jax.grad`` of the same
    loss built from :func:`jrnn.unroll`, to float32 rounding:

    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell, head = jrnn.elman(3, activation="sigmoid"), jrnn.linear(2)
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> params = jrnn.bptt.ElmanNetParams(cell.init(k1, 2), head.init(k2, 3))
    >>> xs, ds = jnp.ones((5, 2)), jnp.zeros((5, 2))
    >>> loss, grads = jrnn.bptt.elman_bptt(params, xs, ds, activation="sigmoid",
    ...                                    output="sigmoid", loss="mse")
    >>> grads.cell.wh.shape, grads.head.w.shape
    ((3, 3), (3, 2))
    >>> def same_loss(p):
    ...   _, hs = jrnn.unroll(cell, p.cell, xs)
    ...   return jrnn.losses.mse(jax.nn.sigmoid(head.apply(p.head, hs)), ds)
    >>> bool(jnp.allclose(loss, same_loss(params)))
    True
    >>> auto = jax.grad(same_loss)(params)
    >>> all(bool(jnp.allclose(a, b, atol=1e-6)) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(auto)))
    True

  References:
    Werbos, "Backpropagation through time: what it does and how to do it",
    Proc. IEEE 78(10) (1990).
    Williams & Zipser, "Gradient-based learning algorithms for recurrent
    networks and their computational complexity", in Backpropagation: Theory,
    Architectures and Applications (1995); Williams & Peng, "An efficient
    gradient-based algorithm for on-line training of recurrent network
    trajectories", Neural Computation 2(4) (1990) (truncated BPTT).
    The seeds: "Recurrent Neural Networks" (Silva, 2021; the 2-3-2 network)
    and "Recurrent Neural Networks — Part 2" (BPTT for Wy, Ws, Wx).
  """
  params, xs, targets, s0 = _bptt_checks.check(params, xs, targets, s0, activation, output, loss, reduction, truncate)
  (wx, ws, b), (wy, by) = params
  T, H = xs.shape[0], ws.shape[0]
  scale = jnp.asarray(1.0 / T if reduction == "mean" else 1.0, wx.dtype)

  # Forward: store zₜ and sₜ for every step.
  def forward(s_prev, x):
    z = x @ wx + s_prev @ ws + b
    s = _phi(activation, z)
    return s, (z, s)

  _, (zs, ss) = lax.scan(forward, s0, xs)
  os = ss @ wy + by[None, :]
  per_step, eps = _output_error(output, loss, os, targets, scale)
  total = scale * jnp.sum(per_step)
  s_prevs = jnp.concatenate([s0[None], ss[:-1]], axis=0)  # sₜ₋₁ for t = 1 … T
  dphis = _dphi(activation, zs, ss)

  # Backward: δₜ = (εₜ Wyᵀ + δₜ₊₁ Wsᵀ) ⊙ φ'(zₜ), gradients summed over t.
  zero_grads = ElmanNetParams(
    _elman.ElmanParams(jnp.zeros_like(wx), jnp.zeros_like(ws), jnp.zeros_like(b)),
    _linear.LinearParams(jnp.zeros_like(wy), jnp.zeros_like(by)),
  )
  k = T if truncate is None else min(truncate, T)
  # In flight: row j is the error at zₜ due to the loss at step t + j (δ^{(t+j)}_t).
  # Full BPTT needs only their sum, so it carries one row.
  rows = 1 if truncate is None else k

  def backward(carry, step):
    grads, in_flight = carry
    x, s_prev, s, dphi, e = step
    from_output = (e @ wy.T) * dphi  # δ^{(t)}_t
    from_future = (in_flight @ ws.T) * dphi[None, :]  # δ^{(t+j)}_t from δ^{(t+j)}_{t+1}
    if truncate is None:
      in_flight = from_output[None, :] + from_future
    else:
      # The error from step t + k has used up its k transitions: drop it.
      in_flight = jnp.concatenate([from_output[None, :], from_future[:-1]], axis=0)
    delta = jnp.sum(in_flight, axis=0)  # δₜ = ∂L/∂zₜ
    (gwx, gws, gb), (gwy, gby) = grads
    grads = ElmanNetParams(
      _elman.ElmanParams(gwx + jnp.outer(x, delta), gws + jnp.outer(s_prev, delta), gb + delta),
      _linear.LinearParams(gwy + jnp.outer(s, e), gby + e),
    )
    return (grads, in_flight), None

  in_flight = jnp.zeros((rows, H), wx.dtype)
  (grads, _), _ = lax.scan(backward, (zero_grads, in_flight), (xs, s_prevs, ss, dphis, eps), reverse=True)
  return total, grads
