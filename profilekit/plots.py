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


def _scatter_by(ax, table: pd.DataFrame, column: str, title: str) -> None:
    """One colour per value of `column` (10 distinct colours, 20 when there are more values; they repeat beyond)."""
    plt = _pyplot()
    groups = table.groupby(column, sort=True)
    colours = plt.get_cmap("tab10" if groups.ngroups <= 10 else "tab20")
    for n, (label, rows) in enumerate(groups):
        ax.scatter(rows["x"], rows["y"], s=10, alpha=0.8, color=colours(n % 20), label=label)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=1.5, loc="best")


def tsne_png(table: pd.DataFrame, title: str) -> bytes:
    """Two panels of the same t-SNE map (columns x, y): points coloured by method · context, and by the user's
    dominant genre / category."""
    plt = _pyplot()
    series = table.assign(series=table["method"] + " · " + table["context"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    _scatter_by(left, series, "series", "by method")
    _scatter_by(right, series, "dominant_genre", "by dominant genre / category")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def frontier_png(table: pd.DataFrame, title: str) -> bytes:
    """N@10 against inference seconds per user, one labelled point per method · context, the frontier joined."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.scatter(table["seconds_per_user"], table["ndcg10"], s=18, color="tab:blue")
    for row in table.itertuples(index=False):
        ax.annotate(f"{row.method} · {row.context}", (row.seconds_per_user, row.ndcg10), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    front = table[table["on_frontier"]].sort_values("seconds_per_user")
    ax.plot(front["seconds_per_user"], front["ndcg10"], color="tab:red", marker="o", markersize=5, label="frontier")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("inference seconds per user (profile generation + embedding)")
    ax.set_ylabel("NDCG@10")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
