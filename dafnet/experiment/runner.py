"""Runs an experiment's cells through :func:`dafnet.engine.train`, resumably, then writes the tables.

Each cell is a folder ``OUT/cells/<cell id>/``: the engine's run directory (trainable methods)
or, for the training-free baselines, recipe.yaml, splits.json and summary.json written here.
After a cell finishes, ``per_volume.json`` holds the paper Dice of every test volume per
prediction type (the exported weights evaluated over the test split, as the engine's final
evaluation does), which the tables pool over folds.

* a cell with summary.json and per_volume.json is done and skipped;
* a cell with summary.json only gets its per_volume.json computed from its export; so does a cell
  of a method with references (DAFNet's aligned copies and alignment error,
  :mod:`dafnet.experiment.references`) whose per_volume.json was written before they were
  recorded: its export is evaluated again (seconds), nothing is trained;
* a cell with a ``state/`` folder is resumed (``train(resume=...)``); a run that trained every
  epoch but died before writing its summary, or a folder without state, starts again;
* a cell of a method with ``evaluate_from`` trains nothing: it evaluates the export of the
  matching trained cell with its overrides (after that cell, also with ``jobs > 1``);
* a cell whose training fails with a user error (e.g. a single-modality model at 0% target
  labels: nothing to learn from) or a training health check (``TrainingFailed``: a run that does
  not learn, docs/engine.md) is recorded in ``failed.json`` and shown as n/a with its reason,
  never averaged into the tables; it is trained again from the start on the next run (the CLI
  then exits with status 2, naming the failed cells).

With ``jobs > 1`` the cells run side by side in that many spawned processes (each cell is its
own folder, so they do not interfere); each cell's console output goes to ``OUT/logs/<cell>.log``.
The evaluation of a cell (per_volume.json, the training-free and ``evaluate_from`` cells) is
:mod:`dafnet.experiment.cell_evaluation`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from rich.console import Console

from dafnet.console import make_console, print_rule
from dafnet.errors import DafnetError
from dafnet.experiment.cell_evaluation import (
    VALIDATION_RECORD,
    cell_status,
    evaluate_export,
    evaluate_trained_cell,
    evaluate_untrained,
    write_json,
)
from dafnet.experiment.grid import Cell, method_class
from dafnet.experiment.references import reports_references
from dafnet.fsutil import check_output_folder


def status_of(cell: Cell, folder: Path) -> str:
    """:func:`cell_status` of ``cell`` in ``folder``, knowing whether its method reports references."""
    return cell_status(folder, cell.recipe is not None and reports_references(method_class(cell.recipe)))


def run_cell(cell: Cell, folder: Path, console: Console, show_test: bool = True) -> str:
    """Bring one cell to ``done``; returns what was done (skipped/trained/resumed/evaluated/failed).
    ``show_test=False``: the engine's final test evaluation is written, not printed."""
    from dafnet.engine import train

    status = status_of(cell, folder)
    if status == "done":
        return "skipped"
    if status == "evaluate" and cell.evaluates is None:
        evaluate_export(folder) if cell.trainable else evaluate_untrained(cell.recipe, folder)
        return "evaluated"
    (folder / "failed.json").unlink(missing_ok=True)
    try:
        if cell.evaluates is not None:
            evaluate_trained_cell(cell, folder)
            return "evaluated"
        if not cell.trainable:
            evaluate_untrained(cell.recipe, folder)
            return "evaluated"
        action = "trained"
        if status == "resume":
            try:
                train(cell.recipe, resume=folder, console=console, show_summary=show_test)
                action = "resumed"
            except DafnetError as exc:
                if "already" not in exc.message:
                    raise
                console.print(f"[yellow]{cell.id}: {exc.message}; training it again[/]")
                shutil.rmtree(folder)
                train(cell.recipe, run_dir=folder, console=console, show_summary=show_test)
        else:
            if folder.exists():
                shutil.rmtree(folder)
            train(cell.recipe, run_dir=folder, console=console, show_summary=show_test)
        evaluate_export(folder)
        return action
    except DafnetError as exc:
        from dafnet.engine.health import failure_record

        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "failed.json", failure_record(exc))
        console.print(f"[red]{cell.id} failed:[/] {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""))
        return "failed"


def _run_cell_logged(cell: Cell, folder: Path, log: Path, threads: int | None,
                     show_test: bool) -> tuple[str, str, float]:
    """run_cell in a worker process, its console output in ``log``: (cell id, action, seconds)."""
    if threads is not None:
        torch.set_num_threads(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        action = run_cell(cell, folder, make_console(file=handle, force_terminal=False), show_test)
    return cell.id, action, time.perf_counter() - began


def _run_side_by_side(cells: list[Cell], folders: dict[str, Path], logs: Path, jobs: int,
                      console: Console, show_test: bool) -> dict[str, str]:
    import multiprocessing

    # split the CPU between the workers unless the user set the thread count for every process
    threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // jobs)
    actions: dict[str, str] = {}
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch/accelerate state
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_run_cell_logged, c, folders[c.id], logs / f"{c.id}.log", threads, show_test)
                   for c in cells]
        console.print(f"{len(cells)} cells in {jobs} processes; each cell's output: {logs}/<cell>.log")
        for done, future in enumerate(as_completed(futures), 1):
            cell_id, action, seconds = future.result()
            actions[cell_id] = action
            console.print(f"[{done}/{len(cells)}] {cell_id}: {action} in {seconds:.0f} s")
    return actions


def read_failure(folder: Path) -> str | None:
    """Why a failed cell failed (``failed.json``: a health check's name and epoch, and the error), else None."""
    path = folder / "failed.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # cut short, or edited by hand
        return f"failed ({path} cannot be read: {exc})"
    if not isinstance(record, dict):
        return f"failed ({path} holds no record)"
    check = f"{record['check']} at epoch {record.get('epoch')}: " if record.get("check") else ""
    return check + str(record.get("error", "failed"))


def read_decline(folder: Path) -> str | None:
    """A done cell's late decline (summary.json's ``validation_decline``: its export is not its best validated
    weights and its last validation is well below its best), as a line for tables.md, else None."""
    try:
        d = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("validation_decline")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(d, dict):
        return None
    return (f"validation monitor {d.get('best_monitor')} at epoch {d.get('best_epoch')}, "
            f"{d.get('last_monitor')} at epoch {d.get('last_epoch')}")


def read_record(folder: Path) -> dict | None:
    """per_volume.json of a done cell (:mod:`dafnet.experiment.cell_evaluation`; any version), else None."""
    path = folder / "per_volume.json"
    if not path.is_file() or not (folder / "summary.json").is_file():
        return None
    return json.loads(path.read_text())


def read_cell(folder: Path) -> dict | None:
    """per_volume.json's dice (type -> subject -> percent) of a done cell, else None."""
    record = read_record(folder)
    return None if record is None else record["dice"]


def validation_records(cells: list[Cell], folders: dict[str, Path], console: Console) -> dict[str, dict | None]:
    """Cell id -> the validation record of every done cell (evaluated where it has none yet), else None."""
    from dafnet.experiment.cell_evaluation import evaluate_validation

    out = {}
    for cell in cells:
        if read_record(folders[cell.id]) is None:
            out[cell.id] = None
            continue
        if not (folders[cell.id] / VALIDATION_RECORD).is_file():
            console.print(f"{cell.id}: evaluating its validation split")
        out[cell.id] = evaluate_validation(cell, folders[cell.id])
    return out


def run_experiment(spec_path: str | Path, out: str | Path | None = None, dry_run: bool = False,
                   console: Console | None = None, tables_only: bool = False, jobs: int = 1,
                   split: str = "test") -> dict:
    """Run (or, with ``dry_run``, list) every cell, then write the tables. Returns a report dict.
    ``tables_only`` writes the tables of the cells finished so far and trains nothing; ``jobs`` runs
    that many cells at once in separate processes; ``split: validation`` tabulates the done cells'
    validation splits instead (tables_validation.md; each cell's split evaluated once), the numbers to
    choose configurations on: cells it trains still evaluate their test splits (for the later test
    tables), but print no test number."""
    from dafnet.experiment.grid import expand
    from dafnet.experiment.spec import load_spec
    from dafnet.experiment.tables import write_tables

    console = console or make_console()
    spec, base = load_spec(spec_path)
    cells, reference = expand(spec, base)
    cells.sort(key=lambda c: c.fold)  # fold-major: a stopped grid has whole folds
    out = Path(out) if out is not None else Path("runs") / "experiments" / spec.name
    check_output_folder(out, "--out")
    folders = {c.id: out / "cells" / c.id for c in cells}
    if dry_run:
        return {"cells": cells, "reference": reference, "status": {c.id: status_of(c, folders[c.id]) for c in cells},
                "out": out}
    out.mkdir(parents=True, exist_ok=True)
    if Path(spec_path).resolve() != (out / "spec.yaml").resolve():
        shutil.copyfile(spec_path, out / "spec.yaml")
    if jobs < 1:
        raise DafnetError(f"--jobs must be >= 1, got {jobs}")
    if split not in ("test", "validation"):
        raise DafnetError(f"--split must be test or validation, got {split!r}")
    actions = {}
    todo = [] if tables_only else [c for c in cells if status_of(c, folders[c.id]) != "done"]
    to_train = [c for c in todo if c.evaluates is None]  # evaluate_from cells wait for theirs
    if jobs > 1 and len(to_train) > 1:
        running = {c.id for c in to_train}
        actions = {c.id: "skipped" for c in cells if c.id not in running and c.evaluates is None}
        actions.update(_run_side_by_side(to_train, folders, out / "logs", jobs, console, split == "test"))
        for cell in [c for c in cells if c.evaluates is not None]:
            actions[cell.id] = run_cell(cell, folders[cell.id], console)
    # one at a time: expand() lists evaluate_from cells after the others, and the sort is stable
    for i, cell in enumerate([] if tables_only or actions else cells, 1):
        print_rule(console, f"[{i}/{len(cells)}] {cell.id}")
        began = time.perf_counter()
        actions[cell.id] = run_cell(cell, folders[cell.id], console, split == "test")
        console.print(f"{cell.id}: {actions[cell.id]} in {time.perf_counter() - began:.0f} s")
    records = (validation_records(cells, folders, console) if split == "validation"
               else {c.id: read_record(folders[c.id]) for c in cells})
    results = {i: None if r is None else r["dice"] for i, r in records.items()}
    alignment = {i: None if r is None else r.get("alignment") for i, r in records.items()}
    failures = {c.id: reason for c in cells if (reason := read_failure(folders[c.id])) is not None}
    declines = {c.id: line for c in cells if results.get(c.id) and (line := read_decline(folders[c.id]))}
    tables = write_tables(spec, cells, reference, results, out, failures, alignment, split, declines)
    return {"cells": cells, "reference": reference, "actions": actions, "tables": tables, "out": out}


__all__ = ["cell_status", "read_cell", "read_decline", "read_failure", "read_record", "run_cell", "run_experiment",
           "status_of", "validation_records"]
