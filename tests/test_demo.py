"""``make demo`` (``python -m jrnn.apps.demo``) on a tiny budget: it learns, reports baselines, writes the plot."""

import json
import os

import pytest

from jrnn.apps import demo

pytestmark = pytest.mark.standard_promotion  # optax's Adam is not strict-promotion clean


def test_chars_demo_learns_and_leaves_a_plot(tmp_path, capsys):
  out = str(tmp_path / "demo")
  assert demo.main(["--steps", "30", "--hidden", "32", "--out", out, "--no-progress"]) == 0
  text = capsys.readouterr().out
  assert "bigram (add-one)" in text and "sample (temperature 0.7)" in text
  with open(os.path.join(out, "history.json")) as f:
    history = json.load(f)
  first, final = history["loss"][0], history["final_valid_loss"][0]
  uniform = next(v for k, v in history["baselines"].items() if k.startswith("uniform"))
  assert final < uniform < first + 0.1  # from chance (ln |V|) to below it
  assert os.path.getsize(os.path.join(out, "loss.png")) > 1000
