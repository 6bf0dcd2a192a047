"""Resuming a run: its recipe, the check against the recipe its state was saved under, loading
the state, and cleaning up after a new run that stopped before it had any state."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from dafnet.config.schema import Recipe, fixed_on_resume
from dafnet.engine import checkpoint, rundir
from dafnet.errors import DafnetError, TrainingFailed

RESUME_FIXED: tuple[str, ...] = fixed_on_resume()
"""The dotted recipe keys a resume may not change: the fields the schema marks ``FIXED_ON_RESUME``
(method, data, model, losses and most of train). It may change train.epochs, patience, export_weights, log_every,
cpu (where it runs), memory_format, compile and health, and output.* (and the name and description)."""


def resume_recipe(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The run's recipe (``recipe.yaml`` in the run folder), with ``overrides`` such as
    ``train.epochs=60`` (``dafnet train --resume RUN train.epochs=60``)."""
    return rundir.read_run_recipe(run_dir, list(overrides))


def check_resume_recipe(recipe: Recipe, run_dir: Path) -> None:
    """``recipe`` may differ from the one the run's state was saved under only where
    :data:`RESUME_FIXED` allows (epochs, patience, logging, device)."""
    from dafnet.config.resolve import load_recipe

    stored = checkpoint.saved_recipe_path(run_dir / "state")
    saved = load_recipe(stored) if stored is not None else resume_recipe(run_dir)
    a, b = recipe.model_dump(mode="json"), saved.model_dump(mode="json")
    diffs = [key for key in RESUME_FIXED if _at(a, key) != _at(b, key)]
    if diffs:
        raise DafnetError(f"cannot resume {run_dir}: the recipe changes {', '.join(diffs)} against the one its state "
                          f"was saved with" + (f" ({stored})" if stored else ""),
                          hint="undo those changes (in the run's recipe.yaml, too); a resume may change only "
                               "train.epochs, patience, export_weights, log_every, cpu, memory_format, compile and "
                               "health, and output.*, e.g. dafnet train --resume RUN train.epochs=60")


def _at(data: dict, key: str):
    """The value of a dotted ``key`` in a dumped recipe."""
    for part in key.split("."):
        data = data[part]
    return data


def continue_run(session, recipe: Recipe, paths: rundir.RunPaths) -> bool:
    """Load a resumed run's state. True when it has no epoch left to train but its export or its
    summary was never written (a full disk, say), or was written with another ``train.export_weights``:
    it is then only exported and evaluated. An error when it has no epoch left and both, or when a
    health check failed it in its last epoch."""
    root = paths.root
    checkpoint.load_checkpoint(session.accelerator, paths.state)
    done = session.progress
    finished = done.epochs_done >= recipe.train.epochs
    stopped = not finished and session.stopper.should_stop(done.epochs_done)  # with the (possibly raised) patience
    exported = (paths.export / "dafnet_index.json").is_file() and paths.summary.is_file()
    other_weights = exported and _exported_with(paths) != recipe.train.export_weights
    export_only = (finished or stopped) and (not exported or other_weights) and not paths.failed.exists()
    if finished and not export_only:
        raise DafnetError(f"run {root} already trained all {done.epochs_done} epochs",
                          hint=f"raise train.epochs to train further: dafnet train --resume {root} "
                               f"train.epochs={2 * done.epochs_done}; or export its other weights: "
                               f"train.export_weights={'final' if recipe.train.export_weights == 'best' else 'best'}")
    if stopped and not export_only:
        raise DafnetError(f"run {root} already stopped early at epoch {done.epochs_done} (best epoch "
                          f"{session.stopper.best_epoch})",
                          hint=f"raise train.patience to train further: dafnet train --resume {root} train.patience=N")
    if export_only and other_weights:
        session.console.print(f"run {root} trained its {done.epochs_done} epochs: exporting its "
                              f"train.export_weights={recipe.train.export_weights} weights (nothing is trained)")
    elif export_only:
        session.console.print(f"run {root} trained its {done.epochs_done} epochs but its export or summary was not "
                              "written: exporting it")
    else:
        done.stopped_early = False
    if session.accelerator.is_main_process:
        paths.failed.unlink(missing_ok=True)  # a failed run resumed (with other train.health, say) is no longer failed
        meta = json.loads(paths.metadata.read_text()) if paths.metadata.exists() else {}
        meta.setdefault("resumed", []).append({"after_epoch": done.epochs_done,
                                               "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        rundir.write_json(paths.metadata, meta)
        paths.recipe.write_text(rundir.recipe_yaml(recipe), encoding="utf-8")
    return export_only


def _exported_with(paths: rundir.RunPaths) -> str:
    """The ``train.export_weights`` a finished run's export was written with (summary.json; ``final`` before
    that was recorded)."""
    try:
        return json.loads(paths.summary.read_text()).get("export_weights", "final")
    except (OSError, ValueError):
        return "final"


def after_failure(exc: BaseException, root: Path, paths: rundir.RunPaths, fresh: bool, new_run: bool,
                  console: Console) -> BaseException | None:
    """What ``train`` does when a run ends in ``exc``: record a health-check failure, clean up
    (:func:`clean_after_failure`), and return the error to raise instead of ``exc`` (a failed write
    as a :class:`WriteFailed` saying how to go on), or None to raise ``exc``."""
    from dafnet.engine import health
    from dafnet.engine.leftovers import explain_write_failure

    if isinstance(exc, TrainingFailed):
        health.record_failure(paths, exc, console)
    clean_after_failure(root, paths, fresh, new_run, console, exc)
    return explain_write_failure(exc, root)


def clean_after_failure(root: Path, paths: rundir.RunPaths, fresh: bool, new_run: bool, console: Console,
                   exc: BaseException) -> None:
    """A new run that stops before its first epoch's state is saved can be neither resumed nor
    reused: its folder goes (only what this call created), unless a training health check failed
    it (the folder then keeps ``failed.json`` for inspection). Otherwise the state stays, and an
    interruption says how to continue."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    if new_run and not paths.state.exists() and root.exists() and not isinstance(exc, TrainingFailed):
        if fresh:
            shutil.rmtree(root, ignore_errors=True)
        else:  # it existed, empty: empty it again
            for child in root.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        if isinstance(exc, KeyboardInterrupt):
            console.print(f"[yellow]interrupted before the first epoch ended: nothing kept in {root}[/]")
    elif isinstance(exc, KeyboardInterrupt) and paths.state.exists():
        console.print(f"[yellow]interrupted: the state of the last finished epoch is in {paths.state}; "
                      f"continue with: dafnet train --resume {root}[/]")
