"""Small PNG charts for asset metadata (rendered in the Dagster UI as markdown images)."""

from __future__ import annotations

import base64
import io

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def grouped_bars_png(table: pd.DataFrame, value: str, title: str) -> bytes:
    """One bar per (method, context), grouped by domain."""
    plt = _pyplot()

    pivot = table.assign(series=table["method"] + " · " + table["context"]).pivot_table(
        index="domain", columns="series", values=value, aggfunc="mean"
    )
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    pivot.plot.bar(ax=ax, rot=0)
    ax.set_ylabel(value)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return _png(fig)


def reward_curve_png(log: list[dict], title: str, validation: list[dict] | None = None) -> bytes:
    """Training dynamics: the mean reward and each reward term per step with KL on a second axis; with a
    validation curve, a second panel of the held-out users' mean reward and downstream NDCG@10 per view."""
    plt = _pyplot()
    panels = 2 if validation else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 3.2), dpi=100, squeeze=False)
    ax = axes[0][0]
    if log:
        frame = pd.DataFrame(log).set_index("step")
        for column in ["reward_mean", *[c for c in frame.columns if c.startswith("reward/")]]:
            ax.plot(frame.index, frame[column], marker="o", markersize=3, label=column.removeprefix("reward/"))
        if "kl" in frame:
            kl = ax.twinx()
            kl.plot(frame.index, frame["kl"], color="grey", linestyle="--", label="KL")
            kl.set_ylabel("KL to reference", color="grey")
        ax.legend(fontsize=7, ncols=2)
    ax.set_xlabel("step")
    ax.set_ylabel("training reward")
    ax.set_title(title)
    if validation:
        val = pd.DataFrame(validation).set_index("step")
        right = axes[0][1]
        right.errorbar(val.index, val["reward_mean"], yerr=val["reward_std"], marker="o", markersize=3, capsize=2,
                       label="reward (± spread)")
        right.set_xlabel("step")
        right.set_ylabel("validation reward")
        right.set_title("validation: held-out train users")
        ndcg = right.twinx()
        for column, style in (("P/ndcg10", ":"), ("10H+P/ndcg10", "--")):
            if column in val:
                ndcg.plot(val.index, val[column], linestyle=style, marker="s", markersize=3, label=column)
        ndcg.set_ylabel("NDCG@10")
        handles = right.get_legend_handles_labels()[0] + ndcg.get_legend_handles_labels()[0]
        right.legend(handles, [h.get_label() for h in handles], fontsize=7)
    fig.tight_layout()
    return _png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def loss_curve_png(log: list[dict], title: str) -> bytes:
    """Training loss per step, with the learning rate on a second axis."""
    plt = _pyplot()
    frame = pd.DataFrame(log).set_index("step")
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    ax.plot(frame.index, frame["loss"], marker="o", markersize=3, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if "learning_rate" in frame:
        lr = ax.twinx()
        lr.plot(frame.index, frame["learning_rate"], color="grey", linestyle="--")
        lr.set_ylabel("learning rate", color="grey")
    fig.tight_layout()
    return _png(fig)
