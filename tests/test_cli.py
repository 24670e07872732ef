"""The jrnn command line, end to end on tiny configurations, and its errors (exit status 2)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jrnn import checkpoint
from jrnn.apps import cli
from jrnn.apps import run

pytestmark = pytest.mark.standard_promotion  # optax's Adam is not strict-promotion clean

ADDING = [
  "train",
  "--task",
  "adding",
  "--hidden",
  "6",
  "--batch",
  "8",
  "--seq-len",
  "6",
  "--eval-every",
  "3",
  "--no-progress",
]


def _params(directory, step=None):
  config = checkpoint.read_metadata(directory, step)["config"]
  _, state, _ = run.setup_run(config)
  return checkpoint.restore(directory, state, step=step)


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory):
  """An uninterrupted 6-step run."""
  d = str(tmp_path_factory.mktemp("adding") / "run")
  assert cli.main(ADDING + ["--steps", "6", "--checkpoint-dir", d]) == 0
  return d


def test_train_writes_checkpoints_history_and_plot(adding_run, capsys):
  with open(os.path.join(adding_run, "history.json")) as f:
    history = json.load(f)
  assert history["step"] == list(range(6)) and history["eval_step"] == [3, 6]
  assert history["config"]["task"] == "adding" and history["metric"] == "test_mse"
  assert np.isfinite(history["loss"]).all()
  with open(os.path.join(adding_run, "loss.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert checkpoint.all_steps(adding_run) == [3, 6]
  state = _params(adding_run)
  assert state.step == 6


def test_resume_from_the_command_line_is_bit_identical(adding_run, tmp_path, capsys):
  d = str(tmp_path / "run")
  assert cli.main(ADDING + ["--steps", "3", "--checkpoint-dir", d]) == 0
  assert (
    cli.main(["train", "--task", "adding", "--steps", "6", "--checkpoint-dir", d, "--resume", "--no-progress"]) == 0
  )
  out = capsys.readouterr().out
  assert "resumed" in out and "baseline predict 1" in out
  a, b = _params(adding_run), _params(d)
  for x, y in zip(
    jax.tree_util.tree_leaves((a.params, a.opt_state)), jax.tree_util.tree_leaves((b.params, b.opt_state))
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with open(os.path.join(d, "history.json")) as f:
    assert json.load(f)["step"] == list(range(6))  # the resumed run's history includes the first part


def test_reverse_trains_the_plain_encoder_decoder_and_reports_longer_strings(tmp_path, capsys):
  d = str(tmp_path / "reverse")
  argv = ["train", "--task", "reverse", "--attention", "none", "--hidden", "8", "--batch", "8", "--seq-len", "5"]
  assert cli.main(argv + ["--steps", "3", "--eval-every", "3", "--checkpoint-dir", d, "--no-progress"]) == 0
  out = capsys.readouterr().out
  assert "final test_loss" in out and "exact_match_longer" in out and "position-wise unigram" in out
  with open(os.path.join(d, "history.json")) as f:
    history = json.load(f)
  assert history["config"]["attention"] == "none" and history["config"]["seq_len"] == 5
  # the params are the plain encoder-decoder's: the decoder is a GRU, with no attention params
  assert type(_params(d).params.decoder).__name__ == "GRUParams"


def test_chars_train_then_generate(tmp_path, capsys):
  d = str(tmp_path / "chars")
  assert (
    cli.main(
      [
        "train",
        "--task",
        "chars",
        "--cell",
        "gru",
        "--hidden",
        "8",
        "--batch",
        "4",
        "--seq-len",
        "8",
        "--steps",
        "4",
        "--checkpoint-dir",
        d,
        "--no-progress",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "bigram (add-one)" in out and "uniform (ln " in out and "nats/char" in out and "sample" in out
  assert (
    cli.main(
      ["generate", "--checkpoint-dir", d, "--prime", "def ", "--length", "40", "--temperature", "0.5", "--seed", "3"]
    )
    == 0
  )
  text = capsys.readouterr().out
  assert text.startswith("def ") and len(text) == len("def ") + 40 + 1  # and the newline of print
  vocab = checkpoint.read_metadata(d)["vocab"]
  assert set(text[:-1]) <= set(vocab)


def test_words_with_dropout_resumes_bit_identical_then_generates(tmp_path, capsys):
  """The dropout masks are a function of the step: 2 steps, then --resume to 4, equal 4 steps straight."""
  argv = ["train", "--task", "words", "--hidden", "8", "--batch", "4", "--seq-len", "6", "--train-tokens", "3000"]
  argv += ["--dropout", "0.3", "--eval-every", "2", "--eval-tokens", "2000", "--no-progress"]
  whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
  assert cli.main(argv + ["--steps", "4", "--checkpoint-dir", whole]) == 0
  out = capsys.readouterr().out
  assert "Kneser-Ney trigram (3,000 training tokens)" in out and "test_ppl" in out and "sample" in out
  assert cli.main(argv + ["--steps", "2", "--checkpoint-dir", split]) == 0
  assert (
    cli.main(["train", "--task", "words", "--steps", "4", "--checkpoint-dir", split, "--resume", "--no-progress"]) == 0
  )
  a, b = _params(whole), _params(split)
  assert b.step == 4 and checkpoint.read_metadata(split)["config"]["dropout"] == 0.3
  for x, y in zip(
    jax.tree_util.tree_leaves((a.params, a.opt_state)), jax.tree_util.tree_leaves((b.params, b.opt_state))
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  capsys.readouterr()
  assert cli.main(["generate", "--checkpoint-dir", whole, "--prime", "import os\n", "--length", "12"]) == 0
  text = capsys.readouterr().out
  assert text.startswith("import os\n")
  vocab = set(checkpoint.read_metadata(whole)["vocab"])
  assert set(text.split()) - {"import", "os"} <= vocab and len(text.split()) >= 2


def _bad(argv, capsys, match):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("jrnn: error: "), err
  assert match in err, err


@pytest.mark.parametrize(
  "argv, match",
  [
    (["train", "--task", "adding", "--steps", "0"], "--steps must be a positive integer"),
    (["train", "--task", "adding", "--lr", "-1"], "--lr must be a positive number"),
    (["train", "--task", "bogus"], "invalid choice: 'bogus'"),
    (["train", "--task", "adding", "--hidden", "x"], "invalid int value: 'x'"),
    (["train", "--task", "dogs", "--seq-len", "5"], "needs --seq-len 3"),
    (["train", "--task", "adding", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["train"], "required: --task"),
    (["fly"], "invalid choice: 'fly'"),
    (["train", "--task", "adding", "--seed", "-1"], "--seed must be a non-negative integer"),
    (["train", "--task", "chars", "--batch", "1000000"], "too few for 1000000 streams"),
    (["train", "--task", "adding", "--attention", "dot"], "--attention applies to the encoder-decoder tasks"),
    (["train", "--task", "dates", "--cell", "elman"], "--task dates runs --cell gru or lstm"),
    (["train", "--task", "chars", "--dropout", "0.2"], "--dropout apply to --task words, not chars"),
    (["train", "--task", "words", "--dropout", "1"], "--dropout must be in [0, 1)"),
    (["train", "--task", "words", "--train-tokens", "1"], "--train-tokens must be an integer of at least 2"),
    (["train", "--task", "words", "--layers", "0"], "--layers must be a positive integer"),
    (["train", "--task", "words", "--eval-tokens", "10"], "--eval-tokens must be an integer of at least 64"),
  ],
)
def test_bad_flags_exit_2_with_one_line(argv, match, capsys):
  _bad(argv, capsys, match)


def test_impossible_combinations_exit_2(adding_run, tmp_path, capsys, monkeypatch):
  empty = str(tmp_path / "empty")
  _bad(["train", "--task", "adding", "--resume", "--checkpoint-dir", empty], capsys, "no checkpoint to resume")
  _bad(["train", "--task", "adding", "--checkpoint-dir", adding_run], capsys, "already has a checkpoint (step 6)")
  _bad(
    ["train", "--task", "adding", "--resume", "--steps", "6", "--checkpoint-dir", adding_run],
    capsys,
    "already at step 6",
  )
  _bad(
    ["train", "--task", "adding", "--resume", "--steps", "9", "--hidden", "7", "--checkpoint-dir", adding_run],
    capsys,
    "--hidden 7 differs from the checkpoint's 6",
  )
  _bad(["generate", "--checkpoint-dir", adding_run], capsys, "needs a chars or words checkpoint")
  _bad(["generate", "--checkpoint-dir", empty], capsys, "no checkpoint found")
  _bad(["generate", "--checkpoint-dir", adding_run, "--temperature", "0"], capsys, "--temperature must be positive")
  monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)  # as if statsmodels were not installed
  _bad(["train", "--task", "sunspots", "--checkpoint-dir", str(tmp_path / "sun")], capsys, "pip install 'jrnn[data]'")


def test_divergence_is_one_line_and_exit_1(tmp_path, capsys):
  d = str(tmp_path / "nan")
  argv = [
    "train",
    "--task",
    "adding",
    "--hidden",
    "6",
    "--batch",
    "8",
    "--seq-len",
    "6",
    "--optimizer",
    "sgd",
    "--lr",
    "1e30",
    "--steps",
    "10",
    "--checkpoint-dir",
    d,
    "--no-progress",
  ]
  assert cli.main(argv) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "training diverged: loss inf" in err and "no checkpoint was written" in err
  assert checkpoint.latest_step(d) is None


def test_python_dash_m_jrnn(tmp_path):
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "jrnn",
      "train",
      "--task",
      "dogs",
      "--steps",
      "30",
      "--checkpoint-dir",
      str(tmp_path / "dogs"),
      "--no-progress",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr
  assert "final loss" in proc.stdout and "baseline uniform (ln 4): 1.3863" in proc.stdout
  assert checkpoint.latest_step(str(tmp_path / "dogs")) == 30


def test_sequence_options_are_flags_saved_in_the_config(tmp_path, capsys):
  d = str(tmp_path / "dogs")
  assert (
    cli.main(
      [
        "train",
        "--task",
        "dogs",
        "--steps",
        "4",
        "--remat",
        "step",
        "--projection",
        "hoisted",
        "--scan",
        "sequential",
        "--checkpoint-dir",
        d,
        "--no-progress",
      ]
    )
    == 0
  )
  assert "sequence options: scan=sequential, projection=hoisted, remat=step" in capsys.readouterr().out
  config = checkpoint.read_metadata(d)["config"]
  assert (config["scan"], config["projection"], config["remat"], config["vjp"]) == (
    "sequential",
    "hoisted",
    "step",
    "autodiff",
  )
  assert (
    cli.main(
      ["train", "--task", "dogs", "--steps", "6", "--resume", "--remat", "step", "--checkpoint-dir", d, "--no-progress"]
    )
    == 0
  )  # the same value again is no change
  assert checkpoint.read_metadata(d)["config"]["remat"] == "step"
  _bad(
    ["train", "--task", "dogs", "--steps", "8", "--resume", "--remat", "none", "--checkpoint-dir", d],
    capsys,
    "--remat none differs from the checkpoint's step",
  )
  k = str(tmp_path / "chunks")
  assert (
    cli.main(["train", "--task", "dogs", "--steps", "2", "--remat", "2", "--checkpoint-dir", k, "--no-progress"]) == 0
  )
  assert checkpoint.read_metadata(k)["config"]["remat"] == 2
  f = str(tmp_path / "fused")
  assert (
    cli.main(["train", "--task", "dogs", "--steps", "2", "--vjp", "fused", "--checkpoint-dir", f, "--no-progress"]) == 0
  )
  assert checkpoint.read_metadata(f)["config"]["vjp"] == "fused"


def test_precision_is_a_flag_saved_in_the_config(adding_run, tmp_path, capsys):
  """``--precision`` reaches the model, is saved, and --resume keeps it; a run without it saves None."""
  assert checkpoint.read_metadata(adding_run)["config"]["precision"] is None
  d = str(tmp_path / "dogs")
  argv = ["train", "--task", "dogs", "--checkpoint-dir", d, "--no-progress"]
  assert cli.main(argv + ["--steps", "2", "--precision", "highest"]) == 0
  assert "sequence options: precision=highest" in capsys.readouterr().out
  assert checkpoint.read_metadata(d)["config"]["precision"] == "highest"
  _bad(
    argv + ["--steps", "3", "--resume", "--precision", "high"],
    capsys,
    "--precision high differs from the checkpoint's highest",
  )
  assert cli.main(argv + ["--steps", "3", "--resume"]) == 0
  assert checkpoint.read_metadata(d)["config"]["precision"] == "highest"


@pytest.mark.parametrize(
  "argv, match",
  [
    (["--precision", "fp32"], "argument --precision: invalid choice: 'fp32'"),
    (["--remat", "x"], "argument --remat: must be none, step, sqrt or a positive integer"),
    (["--remat", "0"], "argument --remat: must be none, step, sqrt or a positive integer"),
    (["--scan", "parallel"], "invalid choice: 'parallel'"),
    (["--projection", "early"], "invalid choice: 'early'"),
    (["--vjp", "manual"], "invalid choice: 'manual'"),
    (["--scan", "associative"], "--cell lstm cannot run with these sequence options"),
    (["--kernel", "cuda"], "invalid choice: 'cuda'"),
    (["--kernel", "cudnn"], "kernel='cudnn' needs a GPU with cuDNN; JAX's default backend is 'cpu'"),
  ],
)
def test_bad_sequence_options_exit_2_with_one_line(argv, match, tmp_path, capsys):
  _bad(["train", "--task", "adding", "--checkpoint-dir", str(tmp_path / "run")] + argv, capsys, match)


def test_checkpoints_saved_before_the_sequence_options_resume(tmp_path, capsys):
  """A config without scan/projection/remat/vjp/precision reads as their defaults."""
  from jrnn.apps import experiments

  d = str(tmp_path / "old")
  config = experiments.resolve({"task": "dogs", "steps": 3})
  old = {k: v for k, v in config.items() if k not in experiments.OPTION_DEFAULTS}
  _, state, _ = run.setup_run(old)
  checkpoint.save(d, state._replace(step=3), metadata={"config": old})
  _bad(
    ["train", "--task", "dogs", "--steps", "5", "--resume", "--remat", "step", "--checkpoint-dir", d],
    capsys,
    "--remat step differs from the checkpoint's none",
  )
  assert (
    cli.main(
      ["train", "--task", "dogs", "--steps", "5", "--resume", "--remat", "none", "--checkpoint-dir", d, "--no-progress"]
    )
    == 0
  )
  assert checkpoint.latest_step(d) == 5
