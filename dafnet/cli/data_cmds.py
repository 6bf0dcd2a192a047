"""``dafnet data ...``: the built-in phantom on disk, and data checks."""

from __future__ import annotations

from pathlib import Path

import typer

from dafnet.cli.output import console

app = typer.Typer(help="Data: write the phantom, inspect datasets.", no_args_is_help=True)


@app.command("phantom")
def phantom(
    out_dir: Path = typer.Argument(..., help="Folder to write (nnU-Net v2 raw layout)."),
    subjects: int = typer.Option(12, help="Number of subjects."),
    slices: int = typer.Option(8, help="Slices per stack."),
    image_size: int = typer.Option(64, help="Slice size in pixels (square)."),
    modalities: str | None = typer.Option(None, help="Comma-separated, e.g. cine,lge,t2."),
    seed: int = typer.Option(0, help="Seed: the same seed writes the same data."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a non-empty OUT_DIR that holds a dataset dafnet wrote."),
) -> None:
    """Write the synthetic multimodal cardiac phantom as NIfTI in the nnU-Net raw layout."""
    from dafnet.builder import validate_params
    from dafnet.data.phantom import PhantomDataSource, write_phantom
    from dafnet.data.phantom_contrast import MODALITY_NAMES
    from dafnet.errors import DafnetError

    values = {"subjects": subjects, "slices": slices, "image_size": image_size, "seed": seed}
    if modalities is not None:
        names = [m.strip() for m in modalities.split(",")]
        if not any(names):
            raise DafnetError(f"--modalities {modalities!r} names no modality",
                              hint=f"give comma-separated names of {', '.join(MODALITY_NAMES)} (e.g. "
                                   "--modalities cine,lge), or leave the option out for cine,lge")
        if not all(names):
            raise DafnetError(f"--modalities {modalities!r} has an empty name",
                              hint="separate the names by single commas, e.g. --modalities cine,lge")
        values["modalities"] = names
    params = validate_params(PhantomDataSource, values, "phantom")
    path = write_phantom(out_dir, params, overwrite=overwrite, overwrite_option="--overwrite")
    console.print(f"wrote {subjects} phantom subjects to [bold]{path}[/]")


@app.command("check")
def check(
    path: Path | None = typer.Argument(
        None, help="nnU-Net raw folder or datalist JSON (default: the --recipe's data folder)."),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Read with this recipe's data source params (sequences, size, spacing, ...)."),
    target: str | None = typer.Option(None, "--target", help="Target sequence for the pairing distances."),
) -> None:
    """Read every volume as training would; per case: sequences, shapes, spacings, labels and slice
    pairing; then what cannot be used (exit 2 when a case is unusable)."""
    from rich.table import Table

    from dafnet.errors import DafnetError
    from dafnet.inference.data_check import check_cases, load_check_input

    cases, modalities, class_names, params, default_target, notes = load_check_input(path, recipe)
    target = target or default_target
    if target not in modalities:
        raise DafnetError(f"--target {target!r} is not a sequence of the data", hint=f"sequences: {list(modalities)}")
    datalist = path if path is not None and path.is_file() else None  # the file that declares the classes
    reports = check_cases(cases, modalities, class_names, params, target, classes_from=datalist)
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    for report in reports:
        status = "[green]usable[/]" if report.usable else "[bold red]unusable[/]"
        table = Table(title=f"case {report.case}: {status}", title_justify="left")
        for column in ("sequence", "file", "shape", "spacing mm", "slices", "labels",
                       f"to {target} mm med/max"):
            table.add_column(column, overflow="fold")
        for modality, v in report.volumes.items():
            pairing = ("target" if modality == target else
                       f"{v.pairing_mm[0]:.2f} / {v.pairing_mm[1]:.2f}" if v.pairing_mm else "-")
            table.add_row(modality, v.file.name, "x".join(map(str, v.shape)) if v.shape else "-",
                          "x".join(f"{s:.3g}" for s in v.spacing) if v.spacing else "-",
                          str(v.slices) if v.slices is not None else "[red]error[/]",
                          ("-" if v.labels is None else ",".join(map(str, v.labels))) if not v.error else "-",
                          pairing)
        console.print(table)
        for message in report.errors:
            console.print(f"  [bold red]error:[/] {message}", highlight=False)
        for message in report.warnings:
            console.print(f"  [yellow]warning:[/] {message}", highlight=False)
    bad = [r.case for r in reports if not r.usable]
    warned = sum(len(r.warnings) for r in reports) + len(notes)
    console.print(f"{len(reports)} case(s): {len(reports) - len(bad)} usable, {len(bad)} unusable, "
                  f"{warned} warning(s)")
    if bad:
        raise DafnetError(f"{len(bad)} case(s) cannot be used: {', '.join(bad)}",
                          hint="fix or remove the files named above")
    where = path if path is not None else f"the data of recipe {recipe}"
    if not reports:  # training stops on such data too
        raise DafnetError(f"{where} holds no case to train on",
                          hint="put images imagesTr/<case>_<XXXX>.nii.gz in an nnU-Net folder, or "
                               "entries with images in a datalist; see docs/data.md")
    absent = [m for m in modalities if not any(m in case.images for case in cases.values())]
    if absent:  # training refuses a sequence without any image as well
        raise DafnetError(f"{where}: no case has an image of {', '.join(map(repr, absent))}",
                          hint="add its files, or leave it out: drop it from channel_names of dataset.json "
                               "or from a recipe's data.source.params.channels")
