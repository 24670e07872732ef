"""jrnn.export: a model's forward pass and its decode loop, exported, reloaded in a fresh process without jrnn.

The fresh process imports jax and numpy only (``jrnn`` is blocked in its
``sys.modules``), deserializes the saved StableHLO and calls it on batch sizes
other than the example's; its outputs must equal, bit for bit, those of the
same exported module called here, and those equal jrnn's own functions (the
decoded tokens exactly, the logits to float32 rounding).
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export

import jrnn
from jrnn.apps.seq2seq import Seq2Seq
from jrnn.tasks import transduction as tr

FRESH = textwrap.dedent(
  """
  import sys
  sys.modules["jrnn"] = None  # importing jrnn now fails: the modules must run on jax alone
  import jax
  import numpy as np
  from jax import export
  folder = sys.argv[1]
  data = np.load(f"{folder}/inputs.npz")
  out = {}
  for name in ("forward", "decode"):
    with open(f"{folder}/{name}.jax", "rb") as f:
      fn = export.deserialize(bytearray(f.read()))
    args = [data[f"{name}_{i}"] for i in range(len(fn.in_avals))]
    for j, leaf in enumerate(jax.tree_util.tree_leaves(fn.call(*args))):
      out[f"{name}_{j}"] = np.asarray(leaf)
  assert not [m for m in sys.modules if m.startswith("jrnn") and sys.modules[m] is not None]
  np.savez(f"{folder}/outputs.npz", **out)
  """
)


@pytest.fixture(scope="module")
def model_and_data():
  vocab = tr.DATE_VOCAB
  model = Seq2Seq(vocab.size, 8, "gru", "additive")
  params = model.init(jax.random.key(0))
  enc = tr.encode(tr.dates(7, seed=3), vocab, src_length=29, tgt_length=11)
  return model, params, enc


def test_forward_and_decode_reload_in_a_fresh_process_without_jrnn(model_and_data, tmp_path):
  model, params, enc = model_and_data

  def forward(src, mask, dec_in):
    return jax.vmap(lambda s, m, d: model.logits(params, s, m, d))(src, mask, dec_in)

  def decode(src, mask):
    r = model.decode(params, src, mask, beam_size=3, max_length=11)
    return r.tokens, r.scores

  ex = {
    "forward": jrnn.export.export(forward, enc.src[:2], enc.src_mask[:2], enc.dec_in[:2]),
    "decode": jrnn.export.export(decode, enc.src[:2], enc.src_mask[:2]),
  }
  assert str(ex["decode"].in_avals[0]) == "int32[b,29]"
  for name, e in ex.items():
    jrnn.export.save(e, tmp_path / f"{name}.jax")
  inputs = {
    "forward_0": enc.src[:5],
    "forward_1": enc.src_mask[:5],
    "forward_2": enc.dec_in[:5],
    "decode_0": enc.src[2:5],
    "decode_1": enc.src_mask[2:5],
  }  # batch sizes 5 and 3, the example's was 2
  np.savez(tmp_path / "inputs.npz", **inputs)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
  subprocess.run([sys.executable, "-c", FRESH, str(tmp_path)], check=True, cwd=tmp_path, env=env, timeout=300)
  fresh = np.load(tmp_path / "outputs.npz")

  here_forward = np.asarray(ex["forward"].call(*(inputs[f"forward_{i}"] for i in range(3))))
  here_tokens, here_scores = ex["decode"].call(inputs["decode_0"], inputs["decode_1"])
  np.testing.assert_array_equal(fresh["forward_0"], here_forward)
  np.testing.assert_array_equal(fresh["decode_0"], np.asarray(here_tokens))
  np.testing.assert_array_equal(fresh["decode_1"], np.asarray(here_scores))
  # ... and the exported module computes what jrnn does
  np.testing.assert_allclose(here_forward, forward(*(jnp.asarray(inputs[f"forward_{i}"]) for i in range(3))), atol=1e-5)
  tokens, scores = decode(jnp.asarray(inputs["decode_0"]), jnp.asarray(inputs["decode_1"]))
  np.testing.assert_array_equal(np.asarray(here_tokens), np.asarray(tokens))
  np.testing.assert_allclose(np.asarray(here_scores), np.asarray(scores), atol=1e-5)


def test_load_is_the_saved_module(model_and_data, tmp_path):
  model, params, enc = model_and_data
  cell = jrnn.lstm(4)
  p = cell.init(jax.random.key(1), 3)
  fn = lambda xs: jrnn.unroll_batch(cell, p, xs)
  exported = jrnn.export.export(fn, jnp.ones((2, 6, 3)))
  path = tmp_path / "lstm.jax"
  jrnn.export.save(exported, path)
  jrnn.export.save(exported, path)  # overwriting leaves one file and no temporaries
  assert sorted(os.listdir(tmp_path)) == ["lstm.jax"]
  loaded = jrnn.export.load(path)
  xs = jax.random.normal(jax.random.key(2), (3, 6, 3))
  got, want = loaded.call(xs), fn(xs)
  # (LSTMCarry(c, h), hs) comes back as ((c, h), hs): plain tuples a process without jrnn can rebuild
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(((0, 0), 0))
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, atol=1e-6)


def test_fixed_shapes_and_errors():
  cell = jrnn.elman(4)
  p = cell.init(jax.random.key(1), 3)
  fn = lambda xs: jrnn.unroll_batch(cell, p, xs)[1]
  fixed = jrnn.export.export(fn, jnp.ones((2, 6, 3)), batch=None)
  assert str(fixed.in_avals[0]) == "float32[2,6,3]"
  with pytest.raises(ValueError, match="leading batch dimension"):
    jrnn.export.export(lambda x, s: x * s, jnp.ones((2, 3)), jnp.float32(2.0))
  with pytest.raises(TypeError, match="fn must be callable"):
    jrnn.export.export("not a function", jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="jax.export.Exported"):
    jrnn.export.save(b"bytes", "x.jax")
  with pytest.raises(ValueError):  # another trailing shape is refused by the module's own checks
    jax_export.deserialize(jrnn.export.export(fn, jnp.ones((2, 6, 3))).serialize()).call(jnp.ones((2, 7, 3)))


@pytest.mark.skipif(not jrnn.cpu_kernel_available(), reason="the CPU kernel is not built here")
def test_a_function_jitted_and_run_on_the_cpu_kernel_before_exports_on_the_scan():
  """jax.jit caches the trace of its first call (the CPU kernel's custom call under kernel="auto"); export must
  not reuse it, and later calls must be the kernel's again."""
  cell = jrnn.lstm(8)
  params = cell.init(jax.random.key(0), 4)
  forward = jax.jit(lambda xs: jrnn.unroll_batch(cell, params, xs)[1])
  xs = jax.random.normal(jax.random.key(1), (2, 5, 4))
  want = forward(xs)
  exported = jrnn.export.export(forward, xs, batch=None)
  assert "custom_call" not in exported.mlir_module()
  np.testing.assert_allclose(exported.call(xs), want, rtol=1e-5, atol=1e-6)
  assert "jrnn_recurrence_forward" in forward.lower(xs).as_text()
