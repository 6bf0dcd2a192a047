"""``dafnet data ...``: the built-in phantom on disk, and data checks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dafnet.cli.output import console

app = typer.Typer(help="Data: write the phantom, inspect datasets.", no_args_is_help=True)


@app.command("phantom")
def phantom(
    out_dir: Path = typer.Argument(..., help="Folder to write (nnU-Net v2 raw layout)."),
    subjects: int = typer.Option(12, help="Number of subjects."),
    slices: int = typer.Option(8, help="Slices per stack."),
    image_size: int = typer.Option(64, help="Slice size in pixels (square)."),
    modalities: Optional[str] = typer.Option(None, help="Comma-separated, e.g. cine,lge,t2."),
    seed: int = typer.Option(0, help="Seed: the same seed writes the same data."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT_DIR."),
) -> None:
    """Write the synthetic multimodal cardiac phantom as NIfTI in the nnU-Net raw layout."""
    from dafnet.builder import validate_params
    from dafnet.data.phantom import PhantomDataSource, write_phantom

    values = {"subjects": subjects, "slices": slices, "image_size": image_size, "seed": seed}
    if modalities:
        values["modalities"] = [m.strip() for m in modalities.split(",") if m.strip()]
    params = validate_params(PhantomDataSource, values, "phantom")
    path = write_phantom(out_dir, params, overwrite=overwrite)
    console.print(f"wrote {subjects} phantom subjects to [bold]{path}[/]")
