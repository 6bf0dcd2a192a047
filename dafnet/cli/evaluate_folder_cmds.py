"""``dafnet evaluate-folder``: score a folder of predicted masks against a folder of labels."""

from __future__ import annotations

from pathlib import Path

import typer

from dafnet.cli.output import console


def _number(value: float, unit: str = "") -> str:
    return "nan" if value != value else f"{value:.2f}{unit}"


def evaluate_folder(
    predictions: Path = typer.Argument(..., metavar="PREDICTIONS",
                                       help="Folder of predicted masks <case>.nii.gz (e.g. dafnet predict's --out)."),
    labels_dir: Path = typer.Argument(..., metavar="LABELS", help="Folder of label files with the same names."),
    labels: str | None = typer.Option(None, "--labels", help="Label values to score, e.g. 1,2,3 (default: the "
                                         "classes of a dataset.json in LABELS or its parent, else every value found)."),
    out: Path | None = typer.Option(None, "--out", help="A folder for summary.json and per_case.csv, or a .json "
                                       "file (the CSV beside it); default: PREDICTIONS."),
) -> None:
    """Dice, 3D Dice and HD95 (mm) of every predicted case against its label, and their means."""
    from rich.table import Table

    from dafnet.inference.evaluate_folder import evaluate_folder as run
    from dafnet.inference.evaluate_folder import parse_labels, write_results

    values = parse_labels(labels)
    out = out if out is not None else predictions
    with console.status("evaluating...") as status:
        result = run(predictions, labels_dir, values, progress=lambda case: status.update(f"evaluating {case}"))
    files = write_results(result, out, predictions, labels_dir)
    table = Table(title=f"{len(result.per_case)} case(s): mean over cases (undefined cases left out)",
                  title_justify="left")
    for column in ("class", "3D Dice %", "HD95 mm", "undefined HD95"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in result.labels.values():
        table.add_row(name, _number(result.mean[f"dice3d_{name}"]), _number(result.mean[f"hd95_{name}"]),
                      str(result.undefined[f"hd95_{name}"]))
    table.add_section()
    table.add_row("class mean", _number(result.foreground_mean["dice3d"]), _number(result.foreground_mean["hd95"]),
                  "")
    console.print(table)
    console.print(f"paper Dice (per slice, classes pooled): {_number(result.mean['dice'], ' %')}")
    if result.unmatched_labels:
        console.print(f"[yellow]note:[/] {len(result.unmatched_labels)} label file(s) without a prediction "
                      f"were not scored: {', '.join(result.unmatched_labels[:8])}"
                      + (" ..." if len(result.unmatched_labels) > 8 else ""))
    console.print(f"summary: {files[0]}")
    console.print(f"per case: {files[1]}")


def register(app: typer.Typer) -> None:
    app.command("evaluate-folder", rich_help_panel="Run")(evaluate_folder)
