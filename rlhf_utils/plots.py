"""Small matplotlib helpers the notebooks share.

Usage::

    loss_curve(history, "SFT loss")
    bars({"random init": 0.22, "SFT": 0.58}, "mean gold reward", ceiling=1.0)
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt


def loss_curve(history: list[dict[str, Any]], title: str, key: str = "loss"):
    points = [(h["step"], h[key]) for h in history if key in h]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(*zip(*points), marker=".")
    ax.set(xlabel="optimizer step", ylabel=key, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def bars(values: dict[str, float], ylabel: str, ceiling: float | None = None, title: str = ""):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(values), list(values.values()), color="tab:blue")
    for i, v in enumerate(values.values()):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    if ceiling is not None:
        ax.axhline(ceiling, ls="--", color="gray", label=f"maximum ({ceiling:g})")
        ax.legend(loc="lower right")
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig
