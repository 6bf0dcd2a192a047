"""``dafnet experiment SPEC.yaml``: run a grid of recipes (resumable) and write the paper's tables."""

from __future__ import annotations

from pathlib import Path

import typer

from dafnet.cli.output import console


def experiment(
    spec: Path = typer.Argument(..., help="Experiment spec YAML (see recipes/experiments/)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/experiments/<name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and their state; train nothing."),
    tables_only: bool = typer.Option(False, "--tables-only",
                                     help="Write the tables of the cells finished so far; train nothing."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1,
                             help="Cells run side by side in this many processes, each with cpu_count/jobs "
                                  "torch threads unless OMP_NUM_THREADS is set; on a GPU one DAFNet run "
                                  "leaves it mostly idle. Cell output goes to OUT/logs/<cell>.log."),
    split: str = typer.Option("test", "--split",
                              help="Tables of the test splits (tables.md), or of the validation splits "
                                   "(tables_validation.md: choose configurations here; each done cell's "
                                   "validation split is evaluated once, nothing is trained for it; cells it "
                                   "trains print no test number)."),
) -> None:
    """Run an experiment grid (methods x fractions x folds x pairings x ablations); write Tables I-IV."""
    from rich.table import Table

    from dafnet.experiment import run_experiment

    report = run_experiment(spec, out=out, dry_run=dry_run, console=console, tables_only=tables_only, jobs=jobs,
                            split=split)
    if dry_run:
        table = Table(title=f"{len(report['cells'])} cells -> {report['out']} (reference: {report['reference']})",
                      title_justify="left")
        for column in ("cell", "method", "recipe", "fraction", "fold", "pairing", "ablation", "state"):
            table.add_column(column, overflow="fold")
        for cell in report["cells"]:
            fraction = "any" if cell.fraction is None else f"{100 * cell.fraction:g}%"
            table.add_row(cell.id, cell.recipe.method.name, str(cell.recipe_path), fraction, str(cell.fold),
                          cell.pairing, cell.ablation, report["status"][cell.id])
        console.print(table)
        return
    for table in report["tables"]:
        console.print(table.markdown())
        console.print()
    counts: dict[str, int] = {}
    for action in report["actions"].values():
        counts[action] = counts.get(action, 0) + 1
    done = ", ".join(f"{n} {a}" for a, n in counts.items()) or "none run"
    name = "tables.md" if split == "test" else f"tables_{split}.md"
    console.print(f"cells: {done}; tables: {report['out'] / name}")
    failed = sorted(cell for cell, action in report["actions"].items() if action == "failed")
    if failed:
        from dafnet.errors import DafnetError

        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise DafnetError(f"{len(failed)} cell(s) failed: {shown}; the tables leave them out",
                          hint=f"each failed cell's reason is in {report['out'] / 'cells'}/<cell>/failed.json; fix it "
                               "and run the experiment again (finished cells are kept)")


def register(app: typer.Typer) -> None:
    app.command("experiment", rich_help_panel="Run")(experiment)
