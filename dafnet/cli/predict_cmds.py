"""``dafnet predict``: segment NIfTI cases with an exported model."""

from __future__ import annotations

from pathlib import Path

import typer

from dafnet.cli.output import console

_MODES = ("single", "fused")


def predict(
    exports: list[Path] = typer.Argument(..., metavar="EXPORT",
                                        help="A run folder or its export/ folder; several (e.g. the folds): "
                                             "their probabilities are averaged."),
    input: str = typer.Option(..., "--input", "-i",
                              help="nnU-Net raw folder (dataset.json + imagesTs/ or imagesTr/), one of its "
                                   "image folders, DATASET/<case>, or one <case>_XXXX.nii.gz of the case."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <case>.nii.gz and <case>_overlay.png "
                                                      "(outside the input's image and label folders)."),
    save_probabilities: bool = typer.Option(False, "--save-probabilities",
                                            help="Also write <case>.npz (float32 class probabilities, "
                                                 "(classes, z, y, x) on the input grid) and <case>.json."),
    mirror: bool = typer.Option(False, "--mirror", help="Test-time mirroring: average over the in-plane flips."),
    mode: str = typer.Option("fused", "--mode", help="fused (every sequence given) or single (target only)."),
    target: str | None = typer.Option(None, "--target", help="Sequence to segment (default: the export's)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per forward pass."),
    overlap: float = typer.Option(0.5, "--overlap", help="Overlap of neighbouring sliding windows, in [0, 1)."),
    device: str | None = typer.Option(None, "--device",
                                      help="cpu, cuda, cuda:N or mps (default: cuda if present)."),
    ignore_unknown: bool = typer.Option(False, "--ignore-unknown",
                                        help="Skip input sequences the export does not know instead of failing."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace masks and overlays already in --out (other files are kept)."),
) -> None:
    """Segment the target sequence of every case; masks on each target file's original grid.

    Every pixel is covered: sliding windows at the training crop size, blended by a Gaussian.
    Several exports form an ensemble (mean probabilities, then the argmax).
    Nothing reaches --out unless every case succeeds.
    """
    from dafnet.engine.export import read_index
    from dafnet.errors import DafnetError
    from dafnet.inference.ensemble import Ensemble
    from dafnet.inference.inputs import find_input
    from dafnet.inference.outputs import check_output_dir, existing_outputs, output_names
    from dafnet.inference.predictor import check_headers, resolve_device

    if mode not in _MODES:
        raise DafnetError(f"unknown --mode {mode!r}", hint="use single or fused")
    device = resolve_device(device)
    for export in exports:
        read_index(export)  # an export that is not there (a run that never finished, say) is named first
    inputs = find_input(input)
    out_dir = check_output_dir(out, inputs.root, inputs.folders())
    predictor = Ensemble(exports, mode=mode, target=target, batch_size=batch_size, device=device,
                         overlap=overlap, mirror=mirror)
    cases, skipped = predictor.cases(inputs, ignore_unknown)
    check_headers({case: {m: p for f in files for m, p in f.items()} for case, files in cases.items()})
    replaced = existing_outputs(out_dir, [n for case in cases for n in output_names(case, save_probabilities)],
                                overwrite)
    for note in predictor.notes:
        console.print(f"[yellow]note:[/] {note}")
    results = _predict_all(predictor, cases, out_dir, save_probabilities)
    how = ", ".join(([f"ensemble of {len(exports)} exports"] if len(exports) > 1 else [])
                    + (["mirrored"] if mirror else []))
    _print_table(results, predictor.class_names, f"{len(results)} case(s) -> {out_dir}" + (f" ({how})" if how else ""))
    _print_notes(out_dir, replaced, skipped, predictor.target)


def _predict_all(predictor, cases: dict, out_dir: Path, save_probabilities: bool) -> list:
    """Every case predicted into a staging folder (with a progress bar) that becomes ``out_dir``'s
    files only when all succeed; the per-case results."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dafnet.inference.outputs import staged_output

    results = []
    with staged_output(out_dir) as staging, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True) as progress:
        task = progress.add_task(f"predicting {predictor.target}", total=len(cases))
        for case, files in cases.items():
            progress.update(task, description=f"predicting {case}")
            results.append(predictor.predict_case(case, files, staging, save_probabilities))
            progress.advance(task)
    return results


def _print_notes(out_dir: Path, replaced: list, skipped: list, target: str) -> None:
    """What --overwrite replaced and which cases had no target image."""
    if replaced:
        console.print(f"[yellow]replaced {len(replaced)} existing file(s) in {out_dir} (--overwrite)[/]")
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} case(s) without a {target!r} image:[/] " + ", ".join(skipped))


def _print_table(results, class_names, title: str) -> None:
    """Per case: the prediction type and sequences, slices, windows, foreground voxels, seconds."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("case", "prediction", "slices", "windows", *class_names, "seconds"):
        table.add_column(column, justify="left" if column in ("case", "prediction") else "right")
    for r in results:
        table.add_row(r.case, f"{r.mode} ({'+'.join(r.sequences)})", str(r.slices), str(r.windows),
                      *(f"{r.foreground[c]:,}" for c in class_names), f"{r.seconds:.2f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("predict", rich_help_panel="Run")(predict)
