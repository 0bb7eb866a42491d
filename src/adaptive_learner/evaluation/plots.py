"""Pictures of results: the accuracy-matrix heatmap (value in each cell) and strategy bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_matrix(R: np.ndarray, b: np.ndarray, tasks: Sequence[str], title: str, path: Path) -> None:
    """Heatmap of the zero-shot row and R, rows = after training task i, columns = evaluated task j."""
    plt = _plt()
    M = np.vstack([b[None, :], R])
    rows = ["zero-shot"] + [f"after {t}" for t in tasks]
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2.5, 0.6 * len(rows) + 1.5))
    im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if not np.isnan(M[i, j]):
                ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center",
                        color="white" if M[i, j] < 0.6 else "black", fontsize=9)
    ax.axhline(0.5, color="white", lw=2)
    ax.set_xlabel("evaluated on")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(names: Sequence[str], metrics: dict[str, Sequence[float]], path: Path, title: str,
              errors: dict[str, Sequence[float]] | None = None) -> None:
    """Grouped bars: one group per strategy, one bar per metric."""
    plt = _plt()
    keys = list(metrics)
    x = np.arange(len(names))
    w = 0.8 / max(1, len(keys))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) * len(keys) / 2 + 3), 4))
    for k, key in enumerate(keys):
        err = errors.get(key) if errors else None
        ax.bar(x + k * w - 0.4 + w / 2, metrics[key], w, yerr=err, label=key, capsize=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
