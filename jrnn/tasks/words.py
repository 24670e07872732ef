"""Word-level language modelling on the Python standard library's own source.

The corpus ships with every Python, so nothing is downloaded: the ``.py``
files under ``sysconfig.get_paths()["stdlib"]``, without the test suites
(directories named ``test``, ``tests``, ``idle_test``), ``site-packages``,
``encodings`` (codec tables of ``'\\x..'`` literals) and ``pydoc_data``
(already the corpus of :mod:`jrnn.tasks.chars`). Its size therefore depends
on the Python version; CPython 3.11 gives about 610 files and 2.3 million
tokens.

**Tokens.** Each file is read by Python's :mod:`tokenize`. Names, operators
and numbers are tokens as written; a string literal or a comment is split
into words and punctuation (the regular expression ``\\w+|[^\\w\\s]``), so
``"hello world"`` is the four tokens ``" hello world "``. The end of a
logical line is ``<eol>``, a change of indentation ``<indent>`` or
``<dedent>``, and the end of a file ``<eof>``; blank lines and line breaks
inside brackets are dropped.

**Splits.** A file belongs to the validation split when the CRC-32 of its
path relative to the standard library is 0 modulo 20, to the test split when
it is 1, and to training otherwise (about 5 %, 5 % and 90 % of the files):
deterministic, and by module, so no file is split across two sets.

**Vocabulary.** ``<unk>`` (id 0) and the ``vocab_size - 1`` most frequent
training tokens (ties broken by the token's text), 10,000 in all by default,
the size of Mikolov's Penn Treebank vocabulary. Every other token is
``<unk>``.

**Baselines** (perplexity, ``exp`` of the mean negative log-likelihood per
token, on the same splits and vocabulary): the add-one unigram model
(:func:`unigram_perplexity`) and an interpolated Kneser–Ney n-gram model
(:func:`kneser_ney_perplexity`, trigrams by default).

References:
  Mikolov, Karafiát, Burget, Černocký & Khudanpur, "Recurrent neural network
  based language model", Interspeech (2010) (the Penn Treebank set-up).
  Kneser & Ney, "Improved backing-off for m-gram language modeling", ICASSP (1995).
  Chen & Goodman, "An empirical study of smoothing techniques for language
  modeling", Harvard TR-10-98 (1998) (interpolated Kneser–Ney, ``D = n1 / (n1 + 2 n2)``).
"""

from __future__ import annotations

import functools
import io
import math
import pathlib
import re
import sysconfig
import tokenize
import zlib
from collections import Counter
from typing import NamedTuple

import numpy as np

__all__ = (
  "EXCLUDED_DIRS",
  "SPECIALS",
  "UNK",
  "WordData",
  "corpus",
  "decode",
  "detokenize",
  "encode",
  "kneser_ney_perplexity",
  "source_files",
  "split_of",
  "tokens",
  "unigram_perplexity",
  "vocabulary",
  "words",
)

UNK = "<unk>"
SPECIALS = ("<eol>", "<indent>", "<dedent>", "<eof>")  # the layout tokens, beside the source's own
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "encodings", "pydoc_data", "__pycache__"})
_WORD = re.compile(r"\w+|[^\w\s]")
_VERBATIM = frozenset({tokenize.NAME, tokenize.OP, tokenize.NUMBER})
_LAYOUT = {tokenize.NEWLINE: "<eol>", tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>"}


class WordData(NamedTuple):
  """A word corpus split for language modelling.

  Attributes:
    vocab: the tokens; id ``i`` is ``vocab[i]``, ``vocab[0]`` is ``<unk>``.
    train, valid, test: token ids (int32 numpy), the files of each split in
      path order, each ending with ``<eof>``.
  """

  vocab: tuple[str, ...]
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray


def tokens(source: str) -> list[str]:
  """The tokens of one Python source text (see the module's docstring), ending with ``<eof>``.

  Raises:
    ValueError: if :mod:`tokenize` cannot read ``source``.
  """
  out: list[str] = []
  try:
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
      if tok.type in (tokenize.STRING, tokenize.COMMENT):
        out.extend(_WORD.findall(tok.string))
      elif tok.type in _LAYOUT:
        out.append(_LAYOUT[tok.type])
      elif tok.type in _VERBATIM or (tok.type == tokenize.ERRORTOKEN and not tok.string.isspace()):
        out.append(tok.string)  # an ERRORTOKEN: a stray character such as `$` or `?`, kept as written
  except (tokenize.TokenError, SyntaxError) as e:
    raise ValueError(f"jrnn.tasks.words.tokens: cannot tokenize the source: {e}") from None
  out.append("<eof>")
  return out


def source_files(root: str | pathlib.Path | None = None) -> list[pathlib.Path]:
  """The corpus's files: ``.py`` files under ``root`` (default: the standard library), sorted by relative path.

  A file is left out when any directory on its path relative to ``root`` is
  in :data:`EXCLUDED_DIRS`.
  """
  root = pathlib.Path(sysconfig.get_paths()["stdlib"] if root is None else root)
  files = (p for p in root.rglob("*.py") if not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1]))
  return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def split_of(relative_path: str) -> str:
  """``"valid"``, ``"test"`` or ``"train"``: the CRC-32 of the ``/``-separated path modulo 20 is 0, 1, or other."""
  r = zlib.crc32(relative_path.encode("utf-8")) % 20
  return "valid" if r == 0 else "test" if r == 1 else "train"


@functools.lru_cache(maxsize=4)
def corpus(root: str | None = None) -> dict[str, tuple[str, ...]]:
  """The tokens of each split, ``{"train": ..., "valid": ..., "test": ...}``, files in path order.

  A file :mod:`tokenize` cannot read (none in CPython's standard library) is
  skipped. Cached: the standard library's ~2.3 million tokens take a few
  seconds to read.
  """
  base = pathlib.Path(sysconfig.get_paths()["stdlib"] if root is None else root)
  out: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
  for path in source_files(base):
    try:
      with tokenize.open(path) as f:  # honours the file's encoding declaration
        toks = tokens(f.read())
    except (ValueError, SyntaxError, UnicodeDecodeError):
      continue
    out[split_of(path.relative_to(base).as_posix())].extend(toks)
  return {k: tuple(v) for k, v in out.items()}


def vocabulary(train_tokens, vocab_size: int = 10_000) -> tuple[str, ...]:
  """``<unk>`` and the ``vocab_size - 1`` most frequent tokens of ``train_tokens`` (ties: by text)."""
  if not isinstance(vocab_size, int) or vocab_size < 2:
    raise ValueError(f"jrnn.tasks.words.vocabulary: vocab_size must be an integer >= 2, got {vocab_size!r}.")
  counts = Counter(train_tokens)
  counts.pop(UNK, None)
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return (UNK,) + tuple(t for t, _ in ranked[: vocab_size - 1])


def encode(toks, vocab) -> np.ndarray:
  """Token ids (int32) of ``toks``; a token not in ``vocab`` is ``<unk>`` (id 0)."""
  index = {t: i for i, t in enumerate(vocab)}
  return np.fromiter((index.get(t, 0) for t in toks), np.int32, len(toks))


def decode(ids, vocab) -> list[str]:
  """The tokens of ids."""
  return [vocab[int(i)] for i in np.asarray(ids).reshape(-1)]


def detokenize(toks) -> str:
  """Renders tokens as source-like text: ``<eol>`` a line break, ``<indent>``/``<dedent>`` four spaces more or less.

  ``<eof>`` stands on a line of its own.

  Tokens are separated by single spaces, so the text is readable rather than
  runnable: a string literal's words come back space-separated.
  """
  lines, line, depth = [], [], 0
  for t in toks:
    if t == "<eol>":
      lines.append("    " * depth + " ".join(line))
      line = []
    elif t == "<eof>":  # a line of its own; the next file starts unindented
      if line:
        lines.append("    " * depth + " ".join(line))
      lines.append("<eof>")
      line, depth = [], 0
    elif t == "<indent>":
      depth += 1
    elif t == "<dedent>":
      depth = max(depth - 1, 0)
    else:
      line.append(t)
  if line:
    lines.append("    " * depth + " ".join(line))
  return "\n".join(lines)


@functools.lru_cache(maxsize=4)
def words(vocab_size: int = 10_000, root: str | None = None) -> WordData:
  """The standard library's tokens as ids over a ``vocab_size`` vocabulary built on the training split."""
  splits = corpus(root)
  if not splits["train"] or not splits["valid"] or not splits["test"]:
    sizes = {k: len(v) for k, v in splits.items()}
    raise ValueError(f"jrnn.tasks.words.words: a split of the corpus is empty ({sizes} tokens).")
  vocab = vocabulary(splits["train"], vocab_size)
  return WordData(vocab, *(encode(splits[k], vocab) for k in ("train", "valid", "test")))


def _check_ids(name, ids, vocab_size):
  ids = np.asarray(ids)
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise TypeError(f"{name}: token ids must be a 1-D integer array, got {ids.dtype} of shape {ids.shape}.")
  if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
    raise ValueError(f"{name}: ids must lie in [0, {vocab_size}), got values in [{ids.min()}, {ids.max()}].")
  return ids.astype(np.int64)


def unigram_perplexity(train, test, vocab_size: int) -> float:
  """Perplexity on ``test`` of the add-one unigram model ``p(w) = (n_w + 1) / (N + V)`` counted on ``train``."""
  name = "jrnn.tasks.words.unigram_perplexity"
  train, test = _check_ids(name, train, vocab_size), _check_ids(name, test, vocab_size)
  logp = np.log(np.bincount(train, minlength=vocab_size) + 1.0) - math.log(train.size + vocab_size)
  return float(np.exp(-np.mean(logp[test])))


def _ngrams(ids, n, V):
  """Keys ``((w_1 V + w_2) V + ...) + w_n`` of every n-gram of ``ids`` (int64)."""
  key = np.zeros(ids.size - n + 1, np.int64)
  for j in range(n):
    key = key * V + ids[j : ids.size - n + 1 + j]
  return key


def _lookup(keys, values, query):
  """``values`` at ``query`` where ``query`` is in the sorted ``keys``; 0 elsewhere."""
  if keys.size == 0:
    return np.zeros(query.shape, values.dtype)
  pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
  return np.where(keys[pos] == query, values[pos], 0)


def _discount(counts, name):
  n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
  if n1 == 0:
    raise ValueError(f"{name}: no n-gram occurs exactly once; the discount n1 / (n1 + 2 n2) is 0.")
  return n1 / (n1 + 2.0 * n2)


def kneser_ney_perplexity(train, test, vocab_size: int, order: int = 3) -> float:
  """Perplexity on ``test`` of an interpolated Kneser–Ney ``order``-gram model counted on ``train``.

  With ``c_n`` the raw counts of the highest order and, for lower orders,
  the continuation counts ``c_k(g) = |{x : c_{k+1}(x g) > 0}|`` (the number
  of distinct words seen before ``g``), each order ``k`` interpolates with
  the next lower one (Chen & Goodman 1998):

  .. math::

     p_k(w \\mid h) = \\frac{\\max(c_k(h w) - D_k, 0)}{\\sum_v c_k(h v)}
       + \\frac{D_k\\, |\\{v : c_k(h v) > 0\\}|}{\\sum_v c_k(h v)}\\, p_{k-1}(w \\mid h'),
     \\qquad D_k = \\frac{n_1}{n_1 + 2 n_2}

  where ``h'`` is ``h`` without its first word, ``n_1`` and ``n_2`` count the
  k-grams with ``c_k`` equal to 1 and 2, ``p_k = p_{k-1}`` for a context
  ``h`` never seen, and ``p_0(w) = 1 / V`` (so every token has a
  probability). Each test token is scored given the ``order - 1`` tokens
  before it, the first ones given the end of ``train``.
  """
  name = "jrnn.tasks.words.kneser_ney_perplexity"
  if not isinstance(order, int) or order < 1:
    raise ValueError(f"{name}: order must be a positive integer, got {order!r}.")
  V = vocab_size
  if V**order >= 2**62:
    raise ValueError(f"{name}: {V}^{order} n-gram keys do not fit in int64; use a smaller order.")
  train, test = _check_ids(name, train, V), _check_ids(name, test, V)
  if train.size < order:
    raise ValueError(f"{name}: train has {train.size} tokens, fewer than the order {order}.")
  # counts[k] = (sorted k-gram keys, their c_k); the highest order raw, the lower ones continuation counts
  counts = {}
  keys, c = np.unique(_ngrams(train, order, V), return_counts=True)
  counts[order] = (keys, c)
  for k in range(order - 1, 0, -1):
    keys, c = np.unique(counts[k + 1][0] % V**k, return_counts=True)  # drop the first word
    counts[k] = (keys, c)
  stream = np.concatenate([train[-(order - 1) :] if order > 1 else train[:0], test])
  p = np.full(test.size, 1.0 / V)
  for k in range(1, order + 1):
    keys, c = counts[k]
    D = _discount(c, name)
    ctx_keys, inverse = np.unique(keys // V, return_inverse=True)
    ctx_total = np.bincount(inverse, weights=c)
    ctx_types = np.bincount(inverse).astype(np.float64)
    query = _ngrams(stream[order - k :], k, V)  # the k-gram ending at each test token
    total = _lookup(ctx_keys, ctx_total, query // V)
    types = _lookup(ctx_keys, ctx_types, query // V)
    ck = _lookup(keys, c, query)
    seen = total > 0
    safe = np.where(seen, total, 1.0)
    p = np.where(seen, (np.maximum(ck - D, 0.0) + D * types * p) / safe, p)
  return float(np.exp(-np.mean(np.log(p))))
