"""What a run reports: the CSV log, TensorBoard (through Accelerate's trackers), the final
table and the loss-curve figure (what it shows while it runs: dafnet/engine/progress.py)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from rich.table import Table

from dafnet.fsutil import write_atomically


def csv_columns(history: list[dict]) -> list[str]:
    """``epoch`` first, then every key in order of first appearance."""
    columns = ["epoch"]
    for row in history:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def write_csv(path: Path, history: list[dict]) -> None:
    """Rewrite the whole log (columns can appear later, e.g. with validate_every > 1)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=csv_columns(history), restval="")
            writer.writeheader()
            for row in history:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    write_atomically(path, write)


def tracker_config(recipe) -> dict:
    """Flat scalar hyperparameters for TensorBoard's hparams view."""
    out = {"method": recipe.method.name, "data_source": recipe.data.source.name}
    for role, spec in recipe.model.items():
        out[f"model.{role}"] = spec.name
    for key, value in recipe.train.model_dump(mode="json").items():
        out[f"train.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    for key, value in recipe.losses.items():
        out[f"losses.{key}"] = float(value)
    return out


def summary_table(summary: dict[str, float], title: str, method=None) -> Table:
    """The method's own presentation of its summary when it has one, else every number."""
    presented = method.result_table(summary) if method is not None else None
    if presented is not None:
        table = Table(title=f"{title}: {presented.title}", title_justify="left",
                      caption=presented.note or None, caption_justify="left")
        for i, column in enumerate(presented.columns):
            table.add_column(column, style="cyan" if i == 0 else None, justify="left" if i == 0 else "right")
        for row in presented.rows:
            table.add_row(*row)
        return table
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


MONITOR = "validation/monitor"


def _plot(ax, history: list[dict], key: str, label: str, bold: bool, **style):
    pts = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
    if not pts:
        return []
    xs, ys = zip(*pts)
    return ax.plot(xs, ys, lw=2.0 if bold else 1.0, marker="o" if len(xs) < 20 else None, ms=3, label=label,
                   **style)


def loss_curves_figure(history: list[dict], phases: list[str]):
    """The figure of :func:`plot_loss_curves` (a matplotlib Figure), or None when there is nothing
    to plot. The validation panel draws the monitored quantity (``validation/monitor``, what early
    stopping minimises) on its own right-hand axis: Dice in percent, distances in mm and a monitor
    such as 1 - Dice do not share a scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not history:
        return None
    panels = [(p, [k for k in csv_columns(history) if k.startswith(f"{p}/")]) for p in phases]
    panels = [(p, keys) for p, keys in panels if keys]
    val_keys = [k for k in csv_columns(history) if k.startswith("validation/")]
    if val_keys:
        panels.append(("validation", val_keys))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        twin = title == "validation" and MONITOR in keys and len(keys) > 1
        lines = []
        for key in keys:
            if not (twin and key == MONITOR):
                lines += _plot(ax, history, key, key[len(title) + 1:], key.endswith("/total") or key == MONITOR)
        if twin:
            right = ax.twinx()
            lines += _plot(right, history, MONITOR, "monitor (right axis)", True, color="black", ls="--")
            right.set_ylabel("monitor (lower is better)", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(handles=lines, fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_loss_curves(history: list[dict], phases: list[str], path: Path) -> Path | None:
    """One panel per phase (total bold, each term thin) and one for the validation numbers (the
    monitor on its own axis); written to ``path`` (PNG). None when there is nothing to plot."""
    fig = loss_curves_figure(history, phases)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return path
