"""Small PNG charts for asset metadata (rendered in the Dagster UI as markdown images)."""

from __future__ import annotations

import base64
import io

import pandas as pd


def grouped_bars_png(table: pd.DataFrame, value: str, title: str) -> bytes:
    """One bar per (method, context), grouped by domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot = table.assign(series=table["method"] + " · " + table["context"]).pivot_table(
        index="domain", columns="series", values=value, aggfunc="mean"
    )
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    pivot.plot.bar(ax=ax, rot=0)
    ax.set_ylabel(value)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
