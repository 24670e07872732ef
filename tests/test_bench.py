"""The benchmark harness: FLOP counts by hand, and a tiny interleaved run end to end."""

import json
import os

import jax
import numpy as np
import pytest

from jrnn.apps import bench
from jrnn.apps import bench_scaling


def test_flop_count_matches_hand_count():
  cfg = bench.Config("lstm", hidden=8, length=5, batch=2, input_size=3, output_size=4)
  per_step = 2 * 2 * 3 * 32 + 2 * 2 * 8 * 32 + 2 * 2 * 8 * 4  # x Wx, h Wh (4 gates), head
  assert cfg.flops("forward") == 5 * per_step
  assert cfg.flops("train") == 3 * 5 * per_step
  assert bench.Config("elman", 8, 5, 2, 3, 4).flops("forward") == 5 * (2 * 2 * 11 * 8 + 2 * 2 * 8 * 4)


@pytest.mark.standard_promotion  # optax.adam in the train step
def test_tiny_sweep_writes_json_and_plot(tmp_path, capsys):
  rc = bench.main(
    [
      "--cells",
      "gru",
      "--hidden",
      "8",
      "--lengths",
      "4,8",
      "--modes",
      "forward,train",
      "--repeats",
      "2",
      "--out",
      str(tmp_path),
    ]
  )
  assert rc == 0
  (js,) = tmp_path.glob("*.json")
  result = json.loads(js.read_text())
  assert len(result["rows"]) == 4 and result["matmul_peak_gflops"] > 0
  assert {"jax", "flax", "torch", "device"} <= set(result["environment"])
  for row in result["rows"]:
    for lib in ("jrnn", "flax", "torch"):
      r = row["results"][lib]
      assert len(r["times_s"]) == 2 and r["median_s"] > 0
      assert r["gflops"] == pytest.approx(
        bench.Config(row["cell"], 8, row["length"]).flops(row["mode"]) / r["median_s"] / 1e9
      )
  assert (tmp_path / js.name.replace(".json", ".png")).stat().st_size > 10_000
  out = capsys.readouterr().out
  assert out.count("jrnn/flax") == 4 and out.count("jrnn/torch") == 4


def test_bad_flags_exit_2(capsys):
  with pytest.raises(SystemExit) as e:
    bench.main(["--cells", "transformer"])
  assert e.value.code == 2 and "unknown ['transformer']" in capsys.readouterr().err


def test_cli_dispatches_bench(capsys):
  from jrnn.apps import cli

  with pytest.raises(SystemExit) as e:
    cli.main(["bench", "--lengths", "16,x"])
  assert e.value.code == 2 and "comma-separated integers" in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("variant", ["jrnn_hoisted", "jrnn_perstep", "jrnn_fused"])
def test_jrnn_variants_compute_what_jrnn_computes(cell, mode, variant):
  """Every jrnn variant of the benchmark (one option changed) is the same function as the default.

  Only faster or slower.
  """
  cfg = bench.Config(cell, 8, 5, batch=2, input_size=3, output_size=4)
  (_, (fa, aa)), (_, (fb, ab)) = bench._jrnn_fns(cfg, mode), bench.LIBRARIES[variant](cfg, mode)
  with jax.numpy_dtype_promotion("standard"):  # optax.adam in the train step
    out_a, out_b = fa(*aa), fb(*ab)
  for a, b in zip(jax.tree_util.tree_leaves(out_a), jax.tree_util.tree_leaves(out_b)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_hidden_and_lengths_defaults_depend_on_the_run():
  assert (bench._parse([]).hidden, bench._parse([]).lengths) == (bench.GRID["hidden"], bench.GRID["lengths"])
  quick = bench._parse(["--quick", "--hidden", "8"])
  assert (quick.hidden, quick.lengths) == ((8,), bench.QUICK["lengths"])  # a given flag wins over --quick
  study = bench._parse(["--remat-study"])
  assert (study.hidden, study.lengths) == ((128,), (16384,))
  # Giving the grid's default hidden sizes explicitly is not the same as leaving --hidden out.
  assert bench._parse(["--remat-study", "--hidden", "64,256,1024"]).hidden == (64, 256, 1024)


@pytest.mark.standard_promotion  # optax.adam in the train step
def test_remat_study_runs_at_each_of_lengths(tmp_path, capsys):
  rc = bench.main(
    [
      "--remat-study",
      "--cells",
      "gru",
      "--hidden",
      "64,256,1024",
      "--lengths",
      "6,8",
      "--batch",
      "2",
      "--out",
      str(tmp_path),
    ]
  )
  assert rc == 0
  paths = sorted((tmp_path / "remat").glob("*.json"))
  assert [p.name.rsplit("-", 1)[1] for p in paths] == ["T6.json", "T8.json"]
  for path, length in zip(paths, (6, 8)):
    result = json.loads(path.read_text())
    assert result["config"] == dict(result["config"], cell="gru", hidden=64, length=length, batch=2)
    assert set(result["remat"]) == {"none", "step", "sqrt"}
  assert capsys.readouterr().out.count("remat=step gru H=64 T=") == 2


@pytest.mark.parametrize("argv", [["--lengths", "0"], ["--hidden", "-4"], ["--remat-study", "--lengths", "1,x"]])
def test_bad_sizes_exit_2(argv, capsys):
  with pytest.raises(SystemExit) as e:
    bench.main(argv)
  assert e.value.code == 2 and "integers" in capsys.readouterr().err


def test_scaling_runs_in_a_new_process_with_eight_devices(tmp_path, capsys):
  """``--scaling --quick`` end to end: structure, the guard, the arithmetic of the table; not speed."""
  jax.devices()  # JAX has started here with its one CPU device, so --scaling must start a process of its own
  assert bench.main(["--scaling", "--quick", "--out", str(tmp_path)]) == 0
  (path,) = (tmp_path / "scaling").glob("*-quick.json")
  result = json.loads(path.read_text())
  env, rows, guard = result["environment"], result["rows"], result["guard"]
  assert env["cpu_devices"] == 8 and env["cpu_count"] == os.cpu_count() and env["backend"] == "cpu"
  assert "--xla_force_host_platform_device_count=8" in env["xla_flags"]
  assert result["config"] == dict(result["config"], cell="lstm", hidden=8, length=4, batch=8)
  assert [r["devices"] for r in rows] == [1, 2, 4, 8] and [r["batch_per_device"] for r in rows] == [8, 4, 2, 1]
  # The guard: one step on every mesh is the one-device step, to float32 tolerance.
  assert guard["ok"] and guard["max_param_diff"] <= 1e-5
  np.testing.assert_allclose([r["loss"] for r in rows], rows[0]["loss"], rtol=1e-5)
  np.testing.assert_allclose([r["grad_norm"] for r in rows], rows[0]["grad_norm"], rtol=1e-5)
  for r in rows:
    assert len(r["times_s"]) == 2 and r["median_s"] > 0
    assert r["speedup"] == pytest.approx(rows[0]["median_s"] / r["median_s"])
    assert r["min_s"] <= r["median_s"] and r["speedup_of_min"] == pytest.approx(rows[0]["min_s"] / r["min_s"])
    assert r["efficiency"] == pytest.approx(r["speedup"] / r["devices"])
    assert r["ideal_speedup"] == min(r["devices"], env["cores_available"])
  assert "share this machine's" in result["note"] and "load average of" in result["note"]
  out = capsys.readouterr().out
  assert "| 8 | 1 |" in out and "guard (held)" in out and out.count("first call") == 4


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--scaling", "--batch", "12"], "divisible"),
    (["--scaling", "--devices", "2,4"], "must include 1"),
    (["--scaling", "--devices", "1,x"], "integers"),
    (["--scaling", "--remat-study"], "ask for one"),
  ],
)
def test_bad_scaling_flags_exit_2(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    bench.main(argv)
  assert e.value.code == 2 and message in capsys.readouterr().err


def test_scaling_defaults_and_device_check():
  a = bench._parse(["--scaling"])
  assert (a.cells, a.hidden, a.lengths, a.batch, a.repeats, a.devices) == (
    ("lstm",),
    (256,),
    (128,),
    64,
    15,
    (1, 2, 4, 8),
  )
  assert bench._parse(["--scaling", "--quick", "--batch", "16", "--devices", "4,1"]).batch == 16
  assert bench._parse(["--scaling", "--devices", "4,1,2"]).devices == (1, 2, 4)
  with pytest.raises(ValueError, match="CPU devices"):  # this process has one: the study itself says so
    bench_scaling.scaling_study(devices=(1, 2 * len(jax.devices("cpu"))))


def test_figure_plots_each_library_over_the_faster_peer():
  def res(**medians):
    return {lib: {"median_s": m} for lib, m in medians.items()}

  rows = [
    {"mode": "train", "cell": "lstm", "hidden": 64, "length": 16, "results": res(jrnn=2.0, flax=4.0, torch=5.0)},
    {"mode": "train", "cell": "lstm", "hidden": 64, "length": 128, "results": res(jrnn=9.0, flax=6.0, torch=3.0)},
    {"mode": "train", "cell": "lstm", "hidden": 256, "length": 16, "results": res(jrnn=1.0, jrnn_cudnn=0.5, torch=2.0)},
    {"mode": "forward", "cell": "gru", "hidden": 64, "length": 16, "results": res(jrnn=1.0)},  # no peer: left out
  ]
  fig = bench.figure({"rows": rows, "environment": {"device": "cpu", "date": "2026-11-23"}})
  axes = fig.axes
  assert len(axes) == 2  # one (mode, cell) row, H = 64 and 256
  lines = {
    (ax.get_title(), line.get_label()): line for ax in axes for line in ax.get_lines() if line.get_label()[0] != "_"
  }
  np.testing.assert_allclose(lines["lstm train, H=64", "jrnn"].get_ydata(), [2.0 / 4.0, 9.0 / 3.0])
  np.testing.assert_allclose(lines["lstm train, H=64", "torch"].get_ydata(), [5.0 / 4.0, 1.0])
  np.testing.assert_allclose(lines["lstm train, H=256", "jrnn_cudnn"].get_ydata(), [0.25])
  assert lines["lstm train, H=64", "jrnn"].get_color() == lines["lstm train, H=256", "jrnn"].get_color()
  assert lines["lstm train, H=64", "jrnn"].get_color() != lines["lstm train, H=64", "torch"].get_color()
