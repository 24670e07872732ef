"""Yearly sunspot numbers (1700–2008), one step ahead: many-to-one forecasting.

The series is statsmodels' bundled copy of the yearly mean sunspot numbers
(``statsmodels.datasets.sunspots``, 309 years), so it needs the optional extra
``jrnn[data]`` but no download. Each example is a window of ``W`` consecutive
years ``x_{t-W+1} … x_t`` and its target is the next year ``x_{t+1}``:

.. math::

   \\hat x_{t+1} = \\mathrm{head}(s_t), \\qquad s_t = \\mathrm{cell}(s_{t-1}, x_t)

The split is chronological: windows whose target year falls in the first
``1 - test_fraction`` of the series are for training, the rest for testing.
Values are standardised with the mean and standard deviation of the training
years only. The persistence forecast ``\\hat x_{t+1} = x_t`` (this year's value
again) is the baseline, computed on the same test windows by
:func:`persistence_baseline`.

References:
  Box, Jenkins & Reinsel, "Time Series Analysis" (sunspots as a classic
  benchmark); SILSO, Royal Observatory of Belgium (the source series).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jrnn import _checks

__all__ = (
  "SunspotsData",
  "persistence_baseline",
  "series",
  "sunspots",
)


class SunspotsData(NamedTuple):
  """Sunspot windows, standardised with training statistics.

  Attributes:
    train_xs, test_xs: windows ``[N, W, 1]`` (float32 numpy).
    train_ys, test_ys: next-year targets ``[N, 1]``.
    mean, std: the training statistics (to map back to sunspot numbers:
      ``y * std + mean``).
    years: the year of each test target ``[N_test]``.
  """

  train_xs: np.ndarray
  train_ys: np.ndarray
  test_xs: np.ndarray
  test_ys: np.ndarray
  mean: float
  std: float
  years: np.ndarray


def series() -> tuple[np.ndarray, np.ndarray]:
  """``(years, values)`` of the yearly sunspot numbers bundled with statsmodels.

  Raises:
    ImportError: with the install hint, when statsmodels is missing.
  """
  try:
    from statsmodels.datasets import sunspots as sm_sunspots
  except ImportError as e:
    raise ImportError("the sunspots task needs statsmodels: pip install 'jrnn[data]'") from e
  frame = sm_sunspots.load_pandas().data
  if frame is None:  # typed Optional by statsmodels; its bundled data sets always have a frame
    raise RuntimeError("statsmodels.datasets.sunspots returned no data.")
  return frame["YEAR"].to_numpy(np.int64), frame["SUNACTIVITY"].to_numpy(np.float64)


def sunspots(window: int = 20, *, test_fraction: float = 0.2, values=None, years=None) -> SunspotsData:
  """Windows of ``window`` years and their next year, split chronologically.

  ``values`` (and ``years``) replace the bundled series, e.g. in tests.
  """
  if values is None:
    years, values = series()
  values = np.asarray(values, np.float64)
  years = np.arange(values.shape[0]) if years is None else np.asarray(years)
  _checks.positive_int(window, "window", "jrnn.tasks.sunspots")
  n = values.shape[0]
  cut = int(round(n * (1.0 - test_fraction)))  # targets at index >= cut are test targets
  if cut - window < 1 or n - cut < 1:
    raise ValueError(
      f"jrnn.tasks.sunspots: {n} values are too few for windows of {window} with test_fraction={test_fraction}."
    )
  train_part = values[:cut]
  mean, std = float(train_part.mean()), float(train_part.std())
  z = (values - mean) / std
  targets = np.arange(window, n)
  xs = np.stack([z[t - window : t] for t in targets])[..., None].astype(np.float32)
  ys = z[targets][:, None].astype(np.float32)
  test = targets >= cut
  return SunspotsData(xs[~test], ys[~test], xs[test], ys[test], mean, std, years[targets[test]])


def persistence_baseline(xs: np.ndarray, ys: np.ndarray) -> float:
  """MSE of forecasting each window's last value, ``x̂_{t+1} = x_t``."""
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  return float(np.mean(np.square(xs[:, -1, :] - ys)))
