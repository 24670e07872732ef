"""Bad input raises ValueError/TypeError at trace time, naming the argument, got and expected."""

import re

import jax
import jax.numpy as jnp
import pytest

import jrnn

CELL = jrnn.lstm(4)
PARAMS = CELL.init(jax.random.key(0), 3)


def _both(fn, *args, **kw):
  """Calls fn eagerly and under jit; returns the two exceptions' messages."""
  msgs = []
  for f in (fn, jax.jit(fn)):
    with pytest.raises((ValueError, TypeError)) as e:
      f(*args, **kw)
    msgs.append((e.type, str(e.value)))
  assert msgs[0] == msgs[1]
  return msgs[0]


def unroll(xs, mask=None, carry=None):
  return jrnn.unroll(CELL, PARAMS, xs, carry, mask=mask)


@pytest.mark.parametrize(
  "xs,etype,pattern",
  [
    (
      jnp.ones((2, 5, 3)),
      ValueError,
      r"xs must have shape \[T, input_size\] = \[T, 3\], got shape \(2, 5, 3\).*jax.vmap",
    ),
    (jnp.ones((3,)), ValueError, r"xs must have shape \[T, input_size\].*got shape \(3,\)"),
    (jnp.ones((5, 2)), ValueError, r"xs has 2 features \(shape \(5, 2\)\).*expect input_size=3.*\[5, 3\]"),
    (jnp.ones((0, 3)), ValueError, r"xs is an empty sequence \(shape \(0, 3\)\)"),
    (jnp.ones((5, 3), jnp.int32), TypeError, r"xs must be a floating array, got dtype int32"),
  ],
)
def test_bad_xs(xs, etype, pattern):
  t, msg = _both(unroll, xs)
  assert t is etype
  assert re.search(pattern, msg), msg


def test_bad_mask():
  t, msg = _both(unroll, jnp.ones((5, 3)), jnp.ones((4,), bool))
  assert t is ValueError and "mask must have shape [T] = (5,)" in msg and "got shape (4,)" in msg
  t, msg = _both(unroll, jnp.ones((5, 3)), jnp.ones((5,), jnp.int32))
  assert t is TypeError and "mask must be a boolean array, got dtype int32" in msg


def test_bad_carry():
  t, msg = _both(unroll, jnp.ones((5, 3)), None, jnp.zeros(4))
  assert t is ValueError and "carry has structure" in msg and "LSTMCarry" in msg
  t, msg = _both(unroll, jnp.ones((5, 3)), None, jrnn.LSTMCarry(jnp.zeros(4), jnp.zeros(5)))
  assert t is ValueError and "shape (5,), expected (4,)" in msg


def test_bad_step_input():
  t, msg = _both(lambda x: CELL.step(PARAMS, CELL.initial_carry(PARAMS), x), jnp.ones((2, 3)))
  assert t is ValueError and "x must have shape (3,)" in msg and "got shape (2, 3)" in msg
  t, msg = _both(lambda x: CELL.step(PARAMS, CELL.initial_carry(PARAMS), x), jnp.ones(3, jnp.int32))
  assert t is TypeError and "dtype int32" in msg


def test_bad_factory_and_init_arguments():
  with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
    jrnn.gru(0)
  with pytest.raises(ValueError, match="activation must be one of"):
    jrnn.elman(3, activation="softsign")
  with pytest.raises(ValueError, match="init must be 'default' or 'identity'"):
    jrnn.elman(3, init="zeros")
  with pytest.raises(ValueError, match=r"input_size must be a positive int, got 2.5"):
    jrnn.lstm(3).init(jax.random.key(0), 2.5)
  with pytest.raises(TypeError, match="cell must be a jrnn.Cell"):
    jrnn.unroll("lstm", PARAMS, jnp.ones((5, 3)))
  with pytest.raises(ValueError, match="jrnn.unroll: unroll must be 'auto' or a positive int, got 0"):
    jrnn.unroll(CELL, PARAMS, jnp.ones((5, 3)), unroll=0)


def test_bad_head_input():
  head = jrnn.linear(2)
  hp = head.init(jax.random.key(0), 4)
  with pytest.raises(ValueError, match=r"h must have shape \[\.\.\., 4\], got shape \(7, 3\)"):
    head.apply(hp, jnp.ones((7, 3)))


@pytest.mark.parametrize("shape", [(), (2, 3), (1, 2, 3)])
def test_one_to_many_names_x0_for_a_wrong_rank(shape):
  head = jrnn.linear(3)
  hp = head.init(jax.random.key(1), 4)
  with pytest.raises(ValueError, match=r"one_to_many: x0 must have shape \[input_size\], got " + re.escape(str(shape))):
    jrnn.one_to_many(CELL, PARAMS, head, hp, jnp.ones(shape), 3)
