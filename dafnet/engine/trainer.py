"""``train()``: a recipe's method trained in a run directory, exported and evaluated (docs/engine.md).

The prepared objects are a :class:`~dafnet.engine.session.TrainingSession`; the loop over epochs is
:mod:`dafnet.engine.loop`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from dafnet.config.schema import Recipe
from dafnet.console import make_console
from dafnet.engine import distributed, rundir
from dafnet.engine import logging as runlog
from dafnet.engine.export import write_export
from dafnet.engine.health import validation_decline
from dafnet.engine.loop import forward_pass_over_training_data
from dafnet.engine.resume import after_failure, check_resume_recipe, continue_run, resume_recipe
from dafnet.engine.session import TrainingSession
from dafnet.engine.swa import recompute_batchnorm
from dafnet.errors import DafnetError


@dataclass
class TrainResult:
    run_dir: Path
    export_dir: Path
    best_epoch: int | None
    """Early stopping's best epoch: the last whose validation ``monitor`` improved by more than ``min_delta`` (None
    without validation). The weights kept as the best are those of the lowest monitor (summary.json's ``weights``)."""
    epochs_run: int
    history: list[dict]
    summary: dict[str, float]
    """The final evaluation of the exported weights."""
    evaluated_on: str | None
    """``test``, or ``validation`` when the test split is empty (None: both empty)."""
    weights: str
    """Which weights were exported: ``swa``, ``best`` or ``last``."""
    stopped_early: bool = False
    figures: list[Path] = field(default_factory=list)


def _run_dir_for_all_processes(recipe: Recipe, run_dir, resume) -> Path:
    """The main process chooses (and checks) the run directory; the others take its choice."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, parse_flag_from_env

    # as AcceleratorState does: `accelerate launch --cpu` / debug_launcher set ACCELERATE_USE_CPU
    state = PartialState(cpu=recipe.train.cpu or parse_flag_from_env("ACCELERATE_USE_CPU"))
    choice: list = [None]
    if state.is_main_process:
        try:
            choice = [str(rundir.choose_run_dir(recipe, run_dir, resume))]
        except DafnetError as exc:
            choice = [exc]
    if state.num_processes > 1:
        choice = broadcast_object_list(choice)
    if isinstance(choice[0], DafnetError):
        raise choice[0]
    return Path(choice[0])


def train(recipe: Recipe | str | Path | None = None, run_dir: str | Path | None = None,
          resume: str | Path | None = None, console: Console | None = None,
          show_summary: bool = True) -> TrainResult:
    """Train ``recipe``'s method, export it and evaluate it. ``resume=RUN_DIR`` continues a run
    exactly (``recipe`` may then be None: the run's own recipe, or one that only raises
    ``train.epochs``/``patience``). ``show_summary=False`` writes the final evaluation to
    summary.json without printing its table (``dafnet experiment --split validation``: no test number
    is shown while configurations are chosen).

    ``recipe`` is a resolved :class:`Recipe` (``load_recipe``'s, as the CLI and the experiment
    runner pass it), used as it is; a recipe path, or a Recipe that was not resolved, is resolved
    here, once."""
    from dafnet.config.resolve import load_recipe, resolve

    if recipe is None and resume is None:
        raise DafnetError("train() needs a recipe or resume=RUN_DIR")
    if resume is not None and recipe is None:
        recipe = resume_recipe(resume)
    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)  # resolved, once
    elif not recipe.is_resolved:  # a Recipe a library user built without resolving it
        recipe = resolve(recipe)
    console = console or make_console()
    root = _run_dir_for_all_processes(recipe, run_dir, resume)
    if resume is not None:
        check_resume_recipe(recipe, root)
    paths = rundir.RunPaths(root)
    fresh = resume is None and not root.exists()
    try:
        session = _start(recipe, paths, console, resume is not None)
        if not session.export_only:  # a resumed run with every epoch done whose export failed
            session.fit()
        return _finish(session, show_summary)
    except BaseException as exc:
        explained = after_failure(exc, root, paths, fresh, resume is None, console)
        if explained is None:
            raise
        raise explained from exc


def _start(recipe: Recipe, paths: rundir.RunPaths, console: Console, resume: bool) -> TrainingSession:
    """The session, with a resumed run's state loaded."""
    session = TrainingSession(recipe, paths, console, resume=resume)
    session.export_only = resume and continue_run(session, recipe, paths)
    if session.skipped:
        session.console.print("skipping phases with empty streams: " +
                              ", ".join(f"{p.name} ({p.stream})" for p in session.skipped))
    return session


def _best_was_averaged(session: TrainingSession) -> bool:
    """Whether the best weights kept are an SWA average: the rule that validated them (the average from
    ``swa_start`` on, with ``validate_swa``; both are fixed for a run, resumes included)."""
    t = session.recipe.train
    return bool(t.validate_swa and t.swa_start is not None and session.best.epoch >= max(t.swa_start, 1))


def _warn_decline(session: TrainingSession, decline: dict, weights: dict) -> None:
    session.console.print(
        f"[yellow]warning: the validation declined late: monitor {decline['last_monitor']:.4f} at epoch "
        f"{decline['last_epoch']} against its best {decline['best_monitor']:.4f} at epoch "
        f"{decline['best_epoch']}; the export is the {weights['source']} weights. train.export_weights=best "
        f"exports the best validated ones: dafnet train --resume {session.paths.root} train.export_weights=best "
        "re-exports this run without training (docs/engine.md)[/]")


def _finish(session: TrainingSession, show_summary: bool = True) -> TrainResult:
    """The export (the SWA average, the best or the last weights), its evaluation and the run's summary."""
    acc = session.accelerator
    if session.best.available and (session.recipe.train.export_weights == "best" or session.averager.snapshots == 0):
        session.best.restore()  # as validated: an SWA average carries its recomputed BatchNorm statistics
        weights = {"source": "best", "epoch": session.best.epoch, "averaged": _best_was_averaged(session)}
    elif session.averager.snapshots > 0:
        session.averager.copy_to_networks()
        recompute_batchnorm(session.networks, lambda: forward_pass_over_training_data(session))
        distributed.broadcast_buffers(acc, session.networks.values())
        first = session.recipe.train.swa_start
        weights = {"source": "swa", "snapshots": session.averager.snapshots,
                   "epochs": [max(first, 1), session.progress.epochs_done]}
    else:
        weights = {"source": "last", "epoch": session.progress.epochs_done}
    if acc.is_main_process:
        write_export(session.paths.export, networks=session.networks, recipe=session.recipe, facts=session.facts,
                     weights=weights, plans=session.plans)
    acc.wait_for_everyone()

    loaders = session.eval_loaders
    part = "test" if "test" in loaders else ("validation" if "validation" in loaders else None)
    summary = session.evaluate(part) if part else {}
    figures: list[Path] = []
    # a late decline is worth a warning only when the export is not the best validated weights
    decline = None if weights["source"] == "best" else validation_decline(session.progress.history,
                                                                           session.recipe.train.health)
    if acc.is_main_process:
        rundir.write_json(session.paths.summary, {"evaluated_on": part, "weights": weights, "summary": summary,
                                                  "best_epoch": session.stopper.best_epoch,
                                                  "epochs_run": session.progress.epochs_done,
                                                  "stopped_early": session.progress.stopped_early,
                                                  "export_weights": session.recipe.train.export_weights,
                                                  **({"validation_decline": decline} if decline else {})})
        if session.recipe.output.figures:
            fig = runlog.plot_loss_curves(session.progress.history, [p.name for p in session.phases],
                                          session.paths.figures / "loss_curves.png")
            figures = [fig] if fig else []
        if summary and not show_summary:
            session.console.print(f"{part} split evaluated; its numbers are in {session.paths.summary} (not shown)")
        elif summary:
            session.console.print(runlog.summary_table(
                summary, f"{session.recipe.name}: {part} split, {weights['source']} weights", session.method))
        session.console.print(f"run: {session.paths.root}   export: {session.paths.export}   "
                              f"figures: {session.paths.figures if figures else '(none)'}")
        if decline:
            _warn_decline(session, decline, weights)
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(run_dir=session.paths.root, export_dir=session.paths.export,
                       best_epoch=session.stopper.best_epoch, epochs_run=session.progress.epochs_done,
                       history=list(session.progress.history), summary=summary, evaluated_on=part,
                       weights=weights["source"], stopped_early=session.progress.stopped_early,
                       figures=figures)
