"""The benchmark's plot: each library's time over the faster of Flax and PyTorch, against T.

Used by :mod:`jrnn.apps.bench` (``jrnn bench`` saves it beside its JSON) and
to redraw a committed sweep from its JSON: ``plot(json.load(f), "out.png")``.
"""

from __future__ import annotations

from jrnn.apps.bench_models import GATES

PEERS = ("flax", "torch")
# One colour per library, the same in every panel and every plot.
COLOURS = {
  "jrnn": "C0",
  "jrnn_xla": "C9",
  "jrnn_cudnn": "C4",
  "jrnn_hoisted": "C6",
  "jrnn_perstep": "C7",
  "jrnn_fused": "C8",
  "flax": "C1",
  "torch": "C3",
}


def figure(result: dict):
  """Each library's median time over the best peer's (the faster of Flax and PyTorch) against T.

  One panel per (mode, cell) row and hidden size H column, one colour per
  library (:data:`COLOURS`) in every panel; below 1 is faster than every
  peer. Rows without a peer are left out. Returns the matplotlib figure.
  """
  import matplotlib.pyplot as plt

  rows = [r for r in result["rows"] if any(p in r["results"] for p in PEERS)]
  panels = [(m, c) for m in ("forward", "train") for c in GATES if any(r["mode"] == m and r["cell"] == c for r in rows)]
  hidden = sorted({r["hidden"] for r in rows})
  fig, axes = plt.subplots(
    len(panels), len(hidden), figsize=(3.4 * len(hidden), 2.6 * len(panels)), squeeze=False, sharex=True
  )
  for i, (mode, cell) in enumerate(panels):
    for j, H in enumerate(hidden):
      ax = axes[i][j]
      sub = sorted(
        (r for r in rows if (r["mode"], r["cell"], r["hidden"]) == (mode, cell, H)), key=lambda r: r["length"]
      )
      libs = [lib for lib in COLOURS if any(lib in r["results"] for r in sub)]
      libs += sorted({lib for r in sub for lib in r["results"]} - set(libs))
      for lib in libs:
        pts = [(r["length"], _ratio_to_best_peer(r["results"], lib)) for r in sub if lib in r["results"]]
        ax.plot(*zip(*pts), marker="o", ms=3, color=COLOURS.get(lib), label=lib, ls="--" if lib in PEERS else "-")
      ax.axhline(1.0, color="k", lw=0.6)
      ax.set_xscale("log")
      ax.set_title(f"{cell} {mode}, H={H}", fontsize=9)
      ax.grid(True, which="both", alpha=0.3)
      if j == 0:
        ax.set_ylabel("time / best peer")
      if i == len(panels) - 1:
        ax.set_xlabel("sequence length T")
  handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines() if not h.get_label().startswith("_")}
  top = 1 - 0.6 / fig.get_figheight()  # room for the title and the legend, in inches
  fig.legend(
    handles.values(),
    handles.keys(),
    loc="upper center",
    ncol=len(handles),
    fontsize=8,
    bbox_to_anchor=(0.5, top + 0.3 / fig.get_figheight()),
  )
  env = result["environment"]
  fig.suptitle(
    f"time over the faster of Flax and PyTorch, {env['device']} ({env['date']}, B=32, I=O=32)", fontsize=10, y=0.998
  )
  fig.tight_layout(rect=(0, 0, 1, top))
  return fig


def _ratio_to_best_peer(results, lib):
  best = min(results[p]["median_s"] for p in PEERS if p in results)
  return results[lib]["median_s"] / best


def plot(result: dict, path: str):
  """Saves :func:`figure` of ``result`` to ``path`` (any backend: drawn with Agg)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig = figure(result)
  fig.savefig(path, dpi=100)
  plt.close(fig)
