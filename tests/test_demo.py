"""``make demo`` (``python -m jrnn.apps.demo``) on a tiny budget: it learns, reports baselines, writes the plot,
and leaves a checkpoint that ``jrnn generate`` samples from with the command the demo prints last."""

import contextlib
import io
import json
import os
import shlex
import shutil
import sys

import pytest

from jrnn import checkpoint
from jrnn.apps import cli
from jrnn.apps import demo
from jrnn.tasks import chars

pytestmark = pytest.mark.standard_promotion  # optax's Adam is not strict-promotion clean


def _demo(out, steps, hidden=32):
  """Runs the chars demo into ``out``; returns what it printed."""
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert demo.main(["--steps", str(steps), "--hidden", str(hidden), "--out", out, "--no-progress"]) == 0
  return printed.getvalue()


def _generate(argv, capsys):
  """``jrnn generate`` in this process; returns the text it printed, without print's newline."""
  capsys.readouterr()
  assert cli.main(argv) == 0
  text = capsys.readouterr().out
  assert text.endswith("\n")
  return text[:-1]


@pytest.fixture(scope="module")
def chars_run(tmp_path_factory):
  """``(out, printed)`` of one 30-step demo with an LSTM(32)."""
  out = str(tmp_path_factory.mktemp("demo") / "demo_out")
  return out, _demo(out, 30)


def test_chars_demo_learns_and_leaves_a_plot(chars_run):
  out, text = chars_run
  assert "bigram (add-one)" in text and "sample (temperature 0.7)" in text
  with open(os.path.join(out, "history.json")) as f:
    history = json.load(f)
  first, final = history["loss"][0], history["final_valid_loss"][0]
  uniform = next(v for k, v in history["baselines"].items() if k.startswith("uniform"))
  assert final < uniform < first + 0.1  # from chance (ln |V|) to below it
  assert os.path.getsize(os.path.join(out, "loss.png")) > 1000


def test_chars_demo_ends_with_the_generate_command_for_its_checkpoint(chars_run, capsys):
  out, text = chars_run
  assert checkpoint.all_steps(out) == [30]
  command = text.rstrip("\n").splitlines()[-1].strip()
  assert command == demo.generate_command(out)
  words = shlex.split(command)
  i = words.index("generate")
  program, argv = words[:i], words[i:]
  assert argv == ["generate", "--checkpoint-dir", out, "--prime", "The ", "--length", "300"]
  # The program is `jrnn` on the PATH, the jrnn script beside this Python (.venv/bin/jrnn) or `python -m jrnn`.
  script = os.path.join(os.path.dirname(sys.executable), "jrnn")
  if program == ["jrnn"]:
    assert os.path.samefile(shutil.which("jrnn") or "", script)
  elif len(program) == 1:
    assert os.path.samefile(program[0], script) and os.access(program[0], os.X_OK)
  else:
    assert program[1:] == ["-m", "jrnn"] and os.path.samefile(program[0], sys.executable)

  vocab = chars.chars().vocab  # what the demo trained on
  assert checkpoint.read_metadata(out)["vocab"] == vocab
  sample = _generate(argv, capsys)
  assert sample.startswith("The ") and len(sample) == len("The ") + 300
  assert set(sample) <= set(vocab)
  assert _generate(argv[:-1] + ["17"], capsys) == sample[: len("The ") + 17]  # same seed, same start


def test_chars_demo_again_into_the_same_dir_replaces_its_checkpoint(tmp_path, capsys):
  out = str(tmp_path / "demo_out")
  _demo(out, 6, hidden=8)
  _demo(out, 6, hidden=8)  # `make demo` twice: the same step, re-saved
  assert checkpoint.all_steps(out) == [6]
  _demo(out, 4, hidden=16)  # fewer steps, another model: the older step 6 must not shadow it
  assert checkpoint.all_steps(out) == [4]
  assert checkpoint.read_metadata(out)["config"]["hidden"] == 16
  with open(os.path.join(out, "history.json")) as f:
    assert json.load(f)["config"]["steps"] == 4
  assert not [name for name in os.listdir(out) if name.startswith(".")]  # no temporary left behind
  assert len(_generate(["generate", "--checkpoint-dir", out, "--length", "20"], capsys)) == 1 + 20
  # The checkpoint is a `jrnn train --task chars` run's: it trains on with --resume.
  assert (
    cli.main(["train", "--task", "chars", "--checkpoint-dir", out, "--resume", "--steps", "5", "--no-progress"]) == 0
  )
  assert checkpoint.latest_step(out) == 5


def test_generate_command_without_a_jrnn_script_uses_python_m_jrnn(tmp_path, monkeypatch):
  python = tmp_path / "bin" / "python"
  python.parent.mkdir()
  python.touch()
  monkeypatch.setattr(sys, "executable", str(python))
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  assert (
    demo.generate_command("demo_out")
    == f"{python} -m jrnn generate --checkpoint-dir demo_out --prime 'The ' --length 300"
  )
