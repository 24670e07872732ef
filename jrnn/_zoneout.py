r"""Zoneout (Krueger et al., 2017): units of the carry keep their previous value at random, per step.

A cell wrapper whose carry holds a PRNG key: :class:`ZoneoutCarry` ``(inner,
key)``. Each step splits the key, draws the step's masks from one half and
passes the other half on in the carry, so the masks are fresh at every step
while the step stays ``step(params, carry, x)`` and the run a plain
``lax.scan``. The key travels as a floating leaf (the carry contract wants
floating leaves of ``initial_carry``'s shapes): the two 32-bit words of a
``threefry2x32`` key cut into four 16-bit integers held exactly in float32,
so masking (``jnp.where``), resets and batching move it bit for bit, and
``jax.lax.stop_gradient`` keeps gradients out of it.

Why a key in the carry rather than pre-drawn noise as an input: inside
:func:`jrnn.stack` only the first layer sees the inputs, and the masks must
change at every step of every layer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _dropout

KEY_SIZE = 4  # float32 leaves: a threefry2x32 key's two uint32 words as four 16-bit halves


class ZoneoutCarry(NamedTuple):
  """The carry of :func:`zoneout`.

  Attributes:
    inner: the wrapped cell's carry.
    key: the key of the next step's masks, float32 ``[4]`` (the 16-bit pieces
      of a ``threefry2x32`` key's data; ``[B, 4]`` for a batch), NaN while
      unset. Fill it with :func:`zoneout_carry`.
  """

  inner: Any
  key: jax.Array


def _check_rate(rate: Any, what: str, fn_name: str) -> float:
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"{fn_name}: {what} must be a number in [0, 1), got {rate!r}.")
  return float(rate)


def _leaf_rates(inner: Any, rate_c: float, rate_h: float) -> list[float]:
  """Each leaf's rate in an inner carry: ``rate_h`` for the field ``h`` or a bare array, else ``rate_c``."""
  if not hasattr(inner, "_fields"):
    return [rate_h] * len(jax.tree_util.tree_leaves(inner))
  rates = []
  for field in inner._fields:
    rates += [rate_h if field == "h" else rate_c] * len(jax.tree_util.tree_leaves(getattr(inner, field)))
  return rates


def key_bits(key: jax.Array) -> jax.Array:
  """A ``threefry2x32`` key (typed, or raw ``uint32 [..., 2]``) as float32 ``[..., 4]``: its 16-bit halves."""
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  if data.dtype != jnp.uint32 or data.shape[-1:] != (2,):
    raise TypeError(
      f"jrnn.zoneout_carry: key must be a threefry2x32 key (jax.random.key(0), the default), got key data of "
      f"dtype {data.dtype} and shape {tuple(data.shape)}."
    )
  halves = jnp.stack([data >> 16, data & 0xFFFF], axis=-1)
  return halves.reshape(data.shape[:-1] + (KEY_SIZE,)).astype(jnp.float32)


def _bits_key(bits: jax.Array) -> jax.Array:
  """The inverse of :func:`key_bits` for one key (``[4]``)."""
  halves = jax.lax.stop_gradient(bits).astype(jnp.uint32).reshape(2, 2)
  return jax.random.wrap_key_data((halves[:, 0] << 16) | halves[:, 1], impl="threefry2x32")


def draw(bits: jax.Array, inner: Any, rates: list[float]) -> tuple[jax.Array, Any]:
  """One step's masks: ``(next bits, masks)``, masks a pytree like ``inner``, True where a unit keeps its old value."""
  key = _bits_key(bits)
  key_next, key_step = jax.random.split(key)
  leaves, tree = jax.tree_util.tree_flatten(inner)
  keys = jax.random.split(key_step, len(leaves))
  masks = [jax.random.bernoulli(k, rate, jnp.shape(leaf)) for k, rate, leaf in zip(keys, rates, leaves)]
  return key_bits(jax.random.key_data(key_next)), tree.unflatten(masks)


def zoneout(
  cell: _cell.Cell,
  rate_c: float,
  rate_h: float | None = None,
  *,
  deterministic: bool = False,
) -> _cell.Cell:
  r"""Zoneout (Krueger et al. 2017): each unit of the carry keeps its previous value with probability ``r``.

  With ``c̃_t`` the wrapped cell's new carry computed from ``c_{t-1}``, and a
  fresh mask ``d_t ~ Bernoulli(r)`` per unit, per step and per sequence:

  .. math::

     c_t = d_t \odot c_{t-1} + (1 - d_t) \odot \tilde c_t
     \qquad \text{(training)}, \qquad
     c_t = r\, c_{t-1} + (1 - r)\, \tilde c_t \qquad (\text{deterministic=True})

  the second being the expectation of the first. Each leaf of the carry gets
  its own masks: the field ``h`` of a NamedTuple carry (:func:`jrnn.lstm`'s
  ``h``) and a carry that is a single array (:func:`jrnn.elman`,
  :func:`jrnn.gru`: the hidden state) with rate ``rate_h``, the other fields
  (the LSTM's cell state ``c``) with ``rate_c``. For the LSTM this is the
  paper's form, ``h_t = d^h_t ⊙ h_{t-1} + (1 - d^h_t) ⊙ o_t ⊙ tanh(c̃_t)``
  with the un-zoned ``c̃_t``. The output of a step is the wrapped cell's
  readout of the new carry (``h_t`` above).

  **Keys.** The carry is :class:`ZoneoutCarry` ``(inner, key)``; each step
  splits the key, draws its masks from one half and passes the other on, so
  the masks are a function of the key alone: the same key gives the same
  masks, and :func:`zoneout_masks` returns them. Start every sequence with
  its own key with :func:`zoneout_carry` (one key per batch row, and per
  zoneout layer of a :func:`jrnn.stack`), from a fresh key per training step.
  ``cell.initial_carry(params)`` has no key (NaN): a training run from it
  gives NaN, rather than the same masks for every sequence. Masked steps of
  ``jrnn.unroll(..., mask=...)`` leave the whole carry unchanged, key
  included, so the ``k``-th real step (in the direction of the scan) uses the
  ``k``-th masks. A ``reset`` restores the whole starting carry, key
  included: each segment after a reset draws the masks the first segment
  drew. Give segments their own masks by running them as separate rows.

  The wrapper keeps the wrapped cell's kind where it can: an
  :class:`jrnn.AffineRecurrence` (elman, gru, lstm) stays one, so
  ``vjp="fused"`` works; a :class:`jrnn.LinearRecurrence` becomes a
  :class:`jrnn.Projected` (the masks are drawn step after step, so no
  associative scan); it composes with :func:`jrnn.stack` and
  :func:`jrnn.bidirectional` (wrap their layers), masks, ``reverse``,
  ``remat``, ``jit``, ``vmap`` and ``grad`` (the key gets no gradient).

  Args:
    cell: a cell of kind :class:`jrnn.Projected`, :class:`jrnn.AffineRecurrence`
      or :class:`jrnn.LinearRecurrence` (every cell of :data:`jrnn.CELLS`).
    rate_c: the probability ``r`` of keeping a unit of the carry fields other
      than ``h``, in ``[0, 1)``.
    rate_h: the same for the field ``h`` (or a carry that is one array);
      ``None`` for ``rate_c``. The paper's LSTM rates are ``rate_c=0.5,
      rate_h=0.05``.
    deterministic: if True, the expectation above (evaluation); the key is
      not read and passes through unchanged.

  Returns:
    A :class:`jrnn.Cell` with the wrapped cell's params and
    :class:`ZoneoutCarry` ``(inner carry, key)``.

  Raises:
    ValueError: for a rate outside ``[0, 1)``.
    TypeError: for a cell that is not a :class:`jrnn.Cell`, or one that runs
      only stepwise or whole sequences (wrap the layers of a stack or
      bidirectional layer instead).

  References:
    Krueger, Maharaj, Kramár, Pezeshki, Ballas, Ke, Goyal, Bengio, Courville &
    Pal, "Zoneout: Regularizing RNNs by randomly preserving hidden
    activations", ICLR (2017).

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.zoneout(jrnn.lstm(8), 0.5, 0.05)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry = jrnn.zoneout_carry(cell, params, jax.random.key(1), batch=2)
    >>> carry, hs = jrnn.unroll_batch(cell, params, jnp.ones((2, 5, 3)), carry)
    >>> hs.shape, carry.inner.c.shape, carry.key.shape
    ((2, 5, 8), (2, 8), (2, 4))
  """
  fn_name = "jrnn.zoneout"
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{fn_name}: cell must be a jrnn.Cell (e.g. jrnn.lstm(16)), got {type(cell).__name__}.")
  rate_c = _check_rate(rate_c, "rate_c", fn_name)
  rate_h = rate_c if rate_h is None else _check_rate(rate_h, "rate_h", fn_name)
  inner_kind = cell.kind
  if not isinstance(inner_kind, _cell.SPLIT_KINDS):
    hint = (
      " Wrap each layer instead: jrnn.stack([jrnn.zoneout(jrnn.lstm(16), 0.5, 0.05), ...])."
      if isinstance(inner_kind, _cell.SequenceLayer)
      else ""
    )
    raise TypeError(
      f"{fn_name}: cell must be of kind jrnn.Projected, AffineRecurrence or LinearRecurrence (its step split "
      f"into project and recur, so the new carry can be mixed with the old one); {cell.name} is a "
      f"{type(inner_kind).__name__}.{hint}"
    )
  name = f"jrnn.zoneout({cell.name})"

  def zone(carry: ZoneoutCarry, new_inner: Any) -> ZoneoutCarry:
    old = carry.inner
    rates = _leaf_rates(old, rate_c, rate_h)
    old_leaves, tree = jax.tree_util.tree_flatten(old)
    new_leaves = tree.flatten_up_to(new_inner)
    if deterministic:
      mixed = [n if r == 0.0 else r * o + (1.0 - r) * n for o, n, r in zip(old_leaves, new_leaves, rates)]
      return ZoneoutCarry(tree.unflatten(mixed), carry.key)
    bits, masks = draw(carry.key, old, rates)
    unset = jnp.isnan(carry.key[0])  # no key: NaN, not masks shared by every sequence
    mixed = [
      jnp.where(unset, jnp.full_like(n, jnp.nan), jnp.where(d, o, n))
      for o, n, d in zip(old_leaves, new_leaves, tree.flatten_up_to(masks))
    ]
    return ZoneoutCarry(tree.unflatten(mixed), bits)

  def initial_carry(params):
    return ZoneoutCarry(cell.initial_carry(params), jnp.full((KEY_SIZE,), jnp.nan, jnp.float32))

  if isinstance(inner_kind, _cell.AffineRecurrence):
    affine = inner_kind
    kind = _cell.AffineRecurrence(
      project=affine.project,
      recurrent=lambda params, carry: affine.recurrent(params, carry.inner),
      update=lambda carry, p, q: zone(carry, affine.update(carry.inner, p, q)),
      output=lambda carry: affine.output(carry.inner),
    )
  else:
    split = inner_kind
    kind = _cell.Projected(
      project=split.project,
      recur=lambda params, carry, p: zone(carry, split.recur(params, carry.inner, p)),
      readout=lambda params, carry, p: split.readout(params, carry.inner, p),
    )
  return _cell.make_cell(
    kind,
    name=name,
    hidden_size=cell.hidden_size,
    init=cell.init,
    initial_carry=initial_carry,
    input_size=cell.input_size,
  )


def _is_zoneout(node: Any) -> bool:
  return isinstance(node, ZoneoutCarry)


def zoneout_carry(cell: _cell.Cell, params: Any, key: jax.Array, *, batch: int | None = None) -> Any:
  """``cell.initial_carry(params)`` with a key in every :class:`ZoneoutCarry`: each sequence's own masks.

  Every zoneout carry in the (possibly nested: :func:`jrnn.stack`,
  :func:`jrnn.bidirectional`) carry gets its own key split from ``key``;
  with ``batch=B`` every leaf gets a leading axis ``B`` (the initial carry
  broadcast) and every row its own key, for :func:`jrnn.unroll_batch`.

  Args:
    cell: a cell with :func:`zoneout` somewhere in it.
    params: its params.
    key: a JAX random key (``threefry2x32``, JAX's default); a new one for
      every training step, e.g. the key :func:`jrnn.train.fit` passes with
      ``key=`` to a step built with ``make_step(..., has_rng=True)``.
    batch: the batch size, or None for one sequence.

  Returns:
    The carry, to pass to :func:`jrnn.unroll` or :func:`jrnn.unroll_batch`.

  Raises:
    ValueError: if the carry holds no :class:`ZoneoutCarry`, or for a bad ``batch``.
    TypeError: for a key that is not a JAX random key.

  Example:
    >>> import jax, jrnn
    >>> cell = jrnn.stack([jrnn.zoneout(jrnn.gru(4), 0.1), jrnn.zoneout(jrnn.gru(4), 0.1)])
    >>> params = cell.init(jax.random.key(0), 3)
    >>> first, second = jrnn.zoneout_carry(cell, params, jax.random.key(1), batch=8)
    >>> first.inner.shape, bool((first.key != second.key).any())
    ((8, 4), True)
  """
  fn_name = "jrnn.zoneout_carry"
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{fn_name}: cell must be a jrnn.Cell, got {type(cell).__name__}.")
  _dropout._check_key(key, fn_name)
  if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
    raise ValueError(f"{fn_name}: batch must be None or a positive int, got {batch!r}.")
  carry = cell.initial_carry(params)
  found = []

  def fill(tree, key):
    nodes, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_is_zoneout)
    keys = jax.random.split(key, max(len(nodes), 1))
    out = []
    for node, k in zip(nodes, keys):
      if _is_zoneout(node):
        found.append(True)
        k_own, k_inner = jax.random.split(k)
        own = k_own if batch is None else jax.random.split(k_own, batch)
        out.append(ZoneoutCarry(fill(node.inner, k_inner), key_bits(own)))
      else:
        out.append(node if batch is None else jnp.broadcast_to(node, (batch,) + jnp.shape(node)))
    return treedef.unflatten(out)

  carry = fill(carry, key)
  if not found:
    raise ValueError(f"{fn_name}: {cell.name}'s carry holds no jrnn.ZoneoutCarry; wrap a cell with jrnn.zoneout.")
  return carry


def zoneout_masks(
  carry: ZoneoutCarry, length: int, rate_c: float, rate_h: float | None = None
) -> tuple[jax.Array, Any]:
  """The masks that a zoneout carry's key gives for ``length`` steps, as :func:`zoneout` draws them.

  For tests and inspection: a NumPy reference of a zoneout cell run with the
  same masks. Pass the rates the cell was built with.

  Args:
    carry: a :class:`ZoneoutCarry` for one sequence (from
      :func:`zoneout_carry` without ``batch``).
    length: the number of (real, unmasked) steps.
    rate_c, rate_h: as in :func:`zoneout`.

  Returns:
    ``(key, masks)``: the key after ``length`` steps (float32 ``[4]``, what
    the carry holds then) and a pytree shaped like ``carry.inner`` with a
    leading ``[length]`` axis, boolean, True where a unit keeps its previous
    value at that step.

  Example:
    >>> import jax, jrnn
    >>> cell = jrnn.zoneout(jrnn.gru(4), 0.3)
    >>> params = cell.init(jax.random.key(0), 2)
    >>> _, masks = jrnn.zoneout_masks(jrnn.zoneout_carry(cell, params, jax.random.key(1)), 6, 0.3)
    >>> masks.shape, masks.dtype
    ((6, 4), dtype('bool'))
  """
  fn_name = "jrnn.zoneout_masks"
  if not isinstance(carry, ZoneoutCarry):
    raise TypeError(f"{fn_name}: carry must be a jrnn.ZoneoutCarry, got {type(carry).__name__}.")
  if isinstance(length, bool) or not isinstance(length, int) or length < 1:
    raise ValueError(f"{fn_name}: length must be a positive int, got {length!r}.")
  rate_c = _check_rate(rate_c, "rate_c", fn_name)
  rate_h = rate_c if rate_h is None else _check_rate(rate_h, "rate_h", fn_name)
  rates = _leaf_rates(carry.inner, rate_c, rate_h)
  return jax.lax.scan(lambda bits, _: draw(bits, carry.inner, rates), carry.key, None, length=length)
