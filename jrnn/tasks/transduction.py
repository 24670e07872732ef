"""Sequence-to-sequence tasks: normalising dates, and reversing strings longer than any seen in training.

Both map a source string to a target string of another length, character by
character, and both are generated offline and deterministically from a seed:

* :func:`dates`: a date written in one of :data:`DATE_FORMATS`' human formats
  ("tue 3 march 1998", "03/03/98", "March 3rd, 1998", ...) maps to its ISO 8601
  form "1998-03-03". Built from :mod:`datetime` with the fixed English names in
  :data:`MONTHS` and :data:`WEEKDAYS`, never ``strftime``'s locale-dependent
  ``%a``/``%B``, so the data are the same on every machine. Two-digit years
  read as 1950-2049, the range drawn from, so every source has one answer;
  numeric day-month orders are day first ("03/04/98" is 3 April).
* :func:`reversal`: a string over a small alphabet maps to the same string
  reversed. Training on lengths up to ``n`` and testing beyond ``n`` measures
  length generalisation, where a fixed-size encoding fails first.

:class:`Vocab` encodes characters as ids, after three specials (padding,
start, end), and :func:`encode` pads a batch of pairs into the arrays an
encoder-decoder trains on. :func:`exact_match` scores decoded ids against the
targets, the tasks' metric.

References:
  Bahdanau, Cho & Bengio, "Neural machine translation by jointly learning to
  align and translate", ICLR (2015) (accuracy falls with source length without
  attention).
  Graves, Wayne & Danihelka, "Neural Turing machines", arXiv:1410.5401 (2014)
  (copy and reversal tasks, tested on lengths beyond training).
"""

from __future__ import annotations

import datetime
import random
import string
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = (
  "DATE_FORMATS",
  "DATE_VOCAB",
  "Encoded",
  "MONTHS",
  "WEEKDAYS",
  "Pairs",
  "Vocab",
  "dates",
  "encode",
  "exact_match",
  "format_date",
  "reversal",
)

MONTHS = (
  "january",
  "february",
  "march",
  "april",
  "may",
  "june",
  "july",
  "august",
  "september",
  "october",
  "november",
  "december",
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

FIRST, LAST = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)  # two-digit years are unambiguous here


def _ordinal(n: int) -> str:
  if 10 <= n % 100 <= 20:
    return f"{n}th"
  return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def _parts(d: datetime.date) -> dict:
  month, weekday = MONTHS[d.month - 1], WEEKDAYS[d.weekday()]
  return dict(
    d=d.day,
    dd=f"{d.day:02d}",
    do=_ordinal(d.day),
    m=d.month,
    mm=f"{d.month:02d}",
    month=month,
    mon=month[:3],
    Month=month.capitalize(),
    Mon=month[:3].capitalize(),
    wd=weekday[:3],
    Wd=weekday[:3].capitalize(),
    Weekday=weekday.capitalize(),
    yyyy=f"{d.year:04d}",
    yy=f"{d.year % 100:02d}",
  )


# The human formats, as str.format templates over _parts: the names are fixed (no locale), the day comes
# before the month in the all-numeric ones.
DATE_FORMATS = (
  "{wd} {d} {month} {yyyy}",  # tue 3 march 1998
  "{dd}/{mm}/{yy}",  # 03/03/98
  "{Month} {do}, {yyyy}",  # March 3rd, 1998
  "{d} {Mon} {yyyy}",  # 3 Mar 1998
  "{Weekday}, {Month} {d}, {yyyy}",  # Tuesday, March 3, 1998
  "{d}.{m}.{yyyy}",  # 3.3.1998
  "{dd}-{mm}-{yyyy}",  # 03-03-1998
  "{month} {d} {yyyy}",  # march 3 1998
  "{do} of {month} {yyyy}",  # 3rd of march 1998
  "{Mon} {d}, {yy}",  # Mar 3, 98
  "{d} {MONTH} {yyyy}",  # 3 MARCH 1998
  "{Wd}, {dd} {Mon} {yyyy}",  # Tue, 03 Mar 1998
  "{yyyy}{mm}{dd}",  # 19980303
  "{d}/{m}/{yyyy}",  # 3/3/1998
  "{mon} {do} {yy}",  # mar 3rd 98
)


def format_date(d: datetime.date, fmt: str) -> str:
  """``d`` written in ``fmt`` (one of :data:`DATE_FORMATS`)."""
  parts = _parts(d)
  parts["MONTH"] = parts["month"].upper()
  return fmt.format(**parts)


class Pairs(NamedTuple):
  """Source and target strings of a transduction task, one pair per index."""

  sources: list[str]
  targets: list[str]


def dates(n: int, *, seed: int = 0, formats: Sequence[str] = DATE_FORMATS) -> Pairs:
  """``n`` dates drawn uniformly from 1950-2049, each written in a uniformly drawn format, with their ISO forms.

  Deterministic for ``seed`` (Python's :class:`random.Random`), on every
  machine and locale.

  Example:
    >>> from jrnn.tasks import transduction
    >>> transduction.format_date(__import__("datetime").date(1998, 3, 3), "{wd} {d} {month} {yyyy}")
    'tue 3 march 1998'
    >>> pairs = transduction.dates(2, seed=0)
    >>> [len(t) for t in pairs.targets]
    [10, 10]
  """
  if not (isinstance(n, int) and n >= 1):
    raise ValueError(f"jrnn.tasks.transduction.dates: n must be a positive integer, got {n!r}.")
  if not formats:
    raise ValueError("jrnn.tasks.transduction.dates: formats must name at least one format.")
  rng = random.Random(seed)
  span = (LAST - FIRST).days
  sources, targets = [], []
  for _ in range(n):
    d = FIRST + datetime.timedelta(days=rng.randint(0, span))
    sources.append(format_date(d, rng.choice(list(formats))))
    targets.append(d.isoformat())
  return Pairs(sources, targets)


def reversal(n: int, lengths: tuple[int, int], *, seed: int = 0, alphabet: str = "abcdefghij") -> Pairs:
  """``n`` random strings over ``alphabet`` with lengths uniform in ``lengths = (low, high)``, and their reverses.

  Example:
    >>> from jrnn.tasks import transduction
    >>> pairs = transduction.reversal(2, (3, 5), seed=0)
    >>> all(t == s[::-1] for s, t in zip(*pairs))
    True
  """
  low, high = lengths
  if not (isinstance(n, int) and n >= 1):
    raise ValueError(f"jrnn.tasks.transduction.reversal: n must be a positive integer, got {n!r}.")
  if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
    raise ValueError(
      f"jrnn.tasks.transduction.reversal: lengths must be (low, high) with 1 <= low <= high, got {lengths!r}."
    )
  rng = random.Random(seed)
  sources = ["".join(rng.choice(alphabet) for _ in range(rng.randint(low, high))) for _ in range(n)]
  return Pairs(sources, [s[::-1] for s in sources])


class Vocab(NamedTuple):
  """Characters as ids: ``0`` padding, ``1`` start (``bos``), ``2`` end (``eos``), then ``chars`` in order."""

  chars: str

  PAD = 0
  BOS = 1
  EOS = 2

  @property
  def size(self) -> int:
    return len(self.chars) + 3

  def ids(self, text: str) -> list[int]:
    """The ids of ``text``; a character outside the vocabulary raises a ValueError naming it."""
    index = {c: i + 3 for i, c in enumerate(self.chars)}
    try:
      return [index[c] for c in text]
    except KeyError as e:
      raise ValueError(f"Vocab.ids: character {e.args[0]!r} of {text!r} is not in the vocabulary.") from None

  def text(self, ids: Sequence[int]) -> str:
    """The characters of ``ids`` up to the first ``eos``, specials dropped."""
    out = []
    for i in ids:
      i = int(i)
      if i == self.EOS:
        break
      if i >= 3:
        out.append(self.chars[i - 3])
    return "".join(out)


DATE_VOCAB = Vocab(string.ascii_lowercase + string.ascii_uppercase + string.digits + " ,./-")


class Encoded(NamedTuple):
  """A batch of pairs as padded id arrays (``N`` pairs).

  Attributes:
    src: source ids ``[N, S]``, padded with 0.
    src_mask: ``[N, S]``, True on the source's characters.
    dec_in: the decoder's teacher-forcing inputs ``[N, U]``: ``bos`` then the target.
    dec_out: what it must predict ``[N, U]``: the target then ``eos``.
    dec_mask: ``[N, U]``, True on the target and its ``eos``.
  """

  src: np.ndarray
  src_mask: np.ndarray
  dec_in: np.ndarray
  dec_out: np.ndarray
  dec_mask: np.ndarray


def encode(pairs: Pairs, vocab: Vocab, *, src_length: int | None = None, tgt_length: int | None = None) -> Encoded:
  """``pairs`` as padded arrays; the lengths default to the longest source and the longest target + 1.

  Example:
    >>> from jrnn.tasks import transduction
    >>> v = transduction.Vocab("ab")
    >>> e = transduction.encode(transduction.Pairs(["ab"], ["ba"]), v)
    >>> e.src.tolist(), e.dec_in.tolist(), e.dec_out.tolist()
    ([[3, 4]], [[1, 4, 3]], [[4, 3, 2]])
  """
  src_ids = [vocab.ids(s) for s in pairs.sources]
  tgt_ids = [vocab.ids(t) for t in pairs.targets]
  S = max(map(len, src_ids)) if src_length is None else src_length
  U = max(map(len, tgt_ids)) + 1 if tgt_length is None else tgt_length
  if max(map(len, src_ids)) > S:
    raise ValueError(f"jrnn.tasks.transduction.encode: a source is longer than src_length={S}.")
  if max(map(len, tgt_ids)) + 1 > U:
    raise ValueError(f"jrnn.tasks.transduction.encode: a target and its eos are longer than tgt_length={U}.")
  N = len(src_ids)
  src, dec_in, dec_out = (np.zeros((N, L), np.int32) for L in (S, U, U))
  src_mask, dec_mask = np.zeros((N, S), bool), np.zeros((N, U), bool)
  for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
    src[i, : len(s)], src_mask[i, : len(s)] = s, True
    dec_in[i, : len(t) + 1] = [vocab.BOS, *t]
    dec_out[i, : len(t) + 1] = [*t, vocab.EOS]
    dec_mask[i, : len(t) + 1] = True
  return Encoded(src, src_mask, dec_in, dec_out, dec_mask)


def exact_match(tokens: np.ndarray, encoded: Encoded) -> np.ndarray:
  """Per pair, whether the decoded ``tokens [N, L]`` equal the target and its ``eos`` (nothing read after it).

  A decoding is right when its first ``len(target) + 1`` ids are the target's
  and ``eos``.
  """
  tokens = np.asarray(tokens)
  out = np.zeros(len(tokens), bool)
  for i, (row, want, m) in enumerate(zip(tokens, encoded.dec_out, encoded.dec_mask)):
    n = int(m.sum())
    out[i] = len(row) >= n and bool(np.array_equal(row[:n], want[:n]))
  return out
