"""``dafnet evaluate``: metrics of an exported model on a data split (table, metrics.json, CSV, PNGs)."""

from __future__ import annotations

from pathlib import Path

import typer

from dafnet.cli.output import console


def _format(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def evaluate(
    export: Path = typer.Argument(..., help="A run folder or its export/ folder."),
    overrides: list[str] | None = typer.Argument(
        None, show_default=False, help="Dotted overrides of the export's recipe for choices without weights, "
        "e.g. model.fuser.name=mean (the same weights, fused by the mean)."),
    metric: list[str] = typer.Option(..., "--metric", "-m", help="A metric name (repeat for several): "
                                     "dice, hd95, alignment, dcor, probe, traversal, figures or a plugin's."),
    metric_param: list[str] | None = typer.Option(
        None, "--metric-param", show_default=False, help="A metric's parameter as NAME.KEY=VALUE (repeat for "
        "several), e.g. dcor.max_samples=2000; `dafnet plugins info NAME` lists them."),
    data: str | None = typer.Option(None, "--data", help="A recipe (its data section is used) or a dataset "
                                       "folder for the export's data source; default: the export's recipe."),
    split: str = typer.Option("test", "--split", help="test | validation | all."),
    out: Path | None = typer.Option(None, "--out", help="Output folder; default: its own folder under "
                                       "<run>/evaluation/, named from the split, metrics, parameters, overrides, "
                                       "--data and --pairing (docs/metrics.md)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder (of an earlier "
                                   "evaluation) when it exists and is not empty; without it, that is an error."),
    pairing: str | None = typer.Option(None, "--pairing", help="expert | shuffled: override the "
                                          "method's pairing of evaluation slices."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Default: the recipe's."),
    cpu: bool = typer.Option(False, "--cpu", help="Evaluate on the CPU even when a GPU is present."),
) -> None:
    """Evaluate an exported model: metrics per volume and summary, figures."""
    from rich.table import Table

    from dafnet.errors import DafnetError
    from dafnet.evaluation import SPLITS
    from dafnet.evaluation import evaluate as run_evaluation

    if split not in SPLITS:
        raise DafnetError(f"unknown --split {split!r}", hint=f"one of {', '.join(SPLITS)}")
    if pairing is not None and pairing not in ("expert", "shuffled"):
        raise DafnetError(f"unknown --pairing {pairing!r}", hint="expert or shuffled")
    with console.status("evaluating...") as status:
        result = run_evaluation(export, metric, data=data, split=split, out_dir=out, pairing=pairing,
                                batch_size=batch_size, device="cpu" if cpu else None,
                                overrides=overrides or [], metric_options=metric_param or [], overwrite=overwrite,
                                progress=lambda case, n: status.update(f"evaluating {case} ({n} samples)"))
    info = result.info
    table = Table(title=f"{len(info['subjects'])} subjects, {info['samples']} samples of the {info['split']} "
                        f"split ({info['samples_per_second']:.1f} samples/s on {info['device']})",
                  title_justify="left")
    table.add_column("metric", style="cyan", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for name, summary in result.metrics.items():
        for i, (key, value) in enumerate(summary.items()):
            table.add_row(name if i == 0 else "", key, _format(value))
        table.add_section()
    console.print(table)
    for name, notes in info.get("notes", {}).items():
        for note in notes:
            console.print(f"[yellow]note[/yellow] ({name}): {note}")
    console.print(f"metrics: {result.out_dir / 'metrics.json'}")
    console.print(f"per volume: {result.out_dir / 'per_volume.csv'}")
    for file in [f for f in result.files if f.endswith(".png")]:
        console.print(f"figure: {file}")


def register(app: typer.Typer) -> None:
    app.command("evaluate", rich_help_panel="Run")(evaluate)
