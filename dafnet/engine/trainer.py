"""The training loop: runs whatever phases a registered method declares (see docs/engine.md)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from dafnet.config.schema import Recipe
from dafnet.console import make_console
from dafnet.engine import checkpoint, distributed, health, rundir
from dafnet.engine import logging as runlog
from dafnet.engine.early_stopping import BestWeights, EarlyStopping
from dafnet.engine.export import write_export
from dafnet.engine.optim import Freezer, build_optimizers, check_contract
from dafnet.engine.progress import training_display
from dafnet.engine.resume import after_failure, check_resume_recipe, continue_run, resume_recipe
from dafnet.engine.streams import TrainStreams, derived_seed, eval_loader
from dafnet.engine.swa import WeightAverager, averaged_weights, recompute_batchnorm
from dafnet.errors import DafnetError
from dafnet.interfaces.method import LossOutput

@dataclass
class TrainResult:
    run_dir: Path
    export_dir: Path
    best_epoch: int | None
    """The epoch with the best validation ``monitor`` (None without validation)."""
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


def _mean_stats(accelerator, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    if not sums or count == 0:
        return {}
    keys = list(sums)
    stacked = torch.stack([sums[k].float() for k in keys]) / count
    stacked = accelerator.reduce(stacked, reduction="mean")
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


class _Session:
    """One train() call: the prepared objects and the loop over epochs."""

    def __init__(self, recipe: Recipe, paths: rundir.RunPaths, console: Console, resume: bool) -> None:
        from accelerate import Accelerator
        from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed

        from dafnet.assemble import build_data_source, build_method
        from dafnet.data.plans import plan_data
        from dafnet.data.splits import split_data

        self.recipe, self.paths, t = recipe, paths, recipe.train
        _forget_previous_run_settings()
        self.accelerator = acc = Accelerator(
            mixed_precision=t.mixed_precision, cpu=t.cpu,
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=t.gradient_accumulation_steps, sync_with_dataloader=False),
            log_with=["tensorboard"] if recipe.output.tensorboard else None,
            project_config=ProjectConfiguration(project_dir=str(paths.root), logging_dir=str(paths.root)))
        self.console = console if acc.is_main_process else Console(quiet=True)
        set_seed(t.seed)

        source, self.facts = build_data_source(recipe)
        self.plans = plan_data(source, recipe.data, rundir.read_plans(paths) if resume else None)
        subjects = source.load()
        by_id = {s.id: s for s in subjects}
        ids = split_data(subjects, recipe.data)
        self.split_ids = ids
        self.splits = {part: [by_id[i] for i in part_ids] for part, part_ids in ids.items()}
        if not self.splits["train"]:
            raise DafnetError("the training split is empty", hint="check data.split")

        self.method = method = build_method(recipe, self.facts)
        self.networks = method.networks()
        datasets = method.train_streams(self.splits["train"])
        self.phases = method.phases()
        self.health_signals = method.health_signals()
        self.groups = method.optimizer_groups()
        check_contract(recipe.method.name, self.networks, self.groups, self.phases, datasets)
        self.evaluation_only = not self.phases
        self.streams = None if self.evaluation_only else TrainStreams(
            acc, datasets, batch_size=t.batch_size, collate=method.collate,
            num_workers=recipe.data.num_workers, seed=t.seed, iterations_per_epoch=t.iterations_per_epoch)
        loaders = self.streams.loaders if self.streams is not None else {}
        self.active = [p for p in self.phases if p.stream in loaders]
        self.skipped = [p for p in self.phases if p.stream not in loaders]
        if not self.active and not self.evaluation_only:
            raise DafnetError(f"every training stream of method {recipe.method.name!r} is empty "
                              f"({', '.join(datasets)})", hint="check the data source and data.annotation_fraction")

        method.to(acc.device)
        if t.memory_format == "channels_last":
            method.to(memory_format=torch.channels_last)
        method.summary()  # a batch-1 forward of every role: a component breaking its contract fails here, named
        self.prepared = {role: acc.prepare_model(net) for role, net in self.networks.items()}
        self.freezer = Freezer(self.networks, self.groups)
        self.optimizers = {g: acc.prepare_optimizer(o)
                           for g, o in build_optimizers(self.networks, self.groups, t).items()}
        self.group_params = {g: self.freezer.trainable(g) for g in self.groups}
        self.eval_loaders = {}
        for part in ("validation", "test"):
            ds = method.eval_dataset(self.splits[part]) if self.splits[part] else None
            if ds is not None and len(ds) > 0:
                self.eval_loaders[part] = eval_loader(acc, ds, t.batch_size, method.collate,
                                                      recipe.data.num_workers)

        self.progress = checkpoint.TrainProgress()
        self.stopper = EarlyStopping(t.patience, t.min_delta)
        self.best = BestWeights(self.networks)
        self.averager = WeightAverager(self.networks, t.swa_start)
        for obj in (self.progress, self.stopper, self.best, self.averager):
            acc.register_for_checkpointing(obj)

        if acc.is_main_process and not resume:
            rundir.write_run_files(paths, recipe, acc, ids, self.plans)
        acc.wait_for_everyone()
        if recipe.output.tensorboard:
            acc.init_trackers("tensorboard", config=runlog.tracker_config(recipe))

    # ------------------------------------------------------------------ one phase
    def _run_phase(self, phase, micro_batches: list, scratches: list[dict]) -> list[LossOutput]:
        """Forward/backward the phase on each micro-batch, then one optimizer step of its group.

        With gradient accumulation the micro-batches of one step all see the same weights,
        so ``accumulation x batch`` equals one batch of that size (for methods without
        batch statistics), also when later phases use the networks this phase updates.
        """
        acc, outputs = self.accelerator, []
        scale = acc.gradient_accumulation_steps / len(micro_batches)  # backward divides by the steps
        stepped = False
        with self.freezer.only(phase.group), distributed.no_sync(self.prepared.values()):
            for batch, scratch in zip(micro_batches, scratches):
                with acc.autocast():
                    out = phase.step(batch, scratch)
                if not isinstance(out, LossOutput):
                    raise DafnetError(f"phase {phase.name!r} returned {type(out).__name__}, not a LossOutput")
                if out.total.requires_grad:
                    acc.backward(out.total * scale if scale != 1 else out.total)
                    stepped = True
                outputs.append(out)
        if stepped:
            distributed.average_gradients(acc, self.group_params[phase.group])
            self.optimizers[phase.group].step()
        self.optimizers[phase.group].zero_grad(set_to_none=True)
        return outputs

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self, epoch: int, display) -> dict[str, float]:
        """``iterations`` batches per stream; every ``gradient_accumulation_steps`` of them make
        one optimizer step per phase."""
        acc, t = self.accelerator, self.recipe.train
        self.method.train()
        batches = self.streams.epoch(epoch)
        n, accum = self.streams.iterations, t.gradient_accumulation_steps
        sums: dict[str, torch.Tensor] = {}
        display.start_epoch(n)
        try:
            for first in range(0, n, accum):
                k = min(accum, n - first)
                streams = list(dict.fromkeys(p.stream for p in self.active))
                micro = {s: [batches.next(s) for _ in range(k)] for s in streams}
                scratch = {s: [{} for _ in range(k)] for s in streams}
                last: dict[str, torch.Tensor] = {}
                for phase in self.active:
                    outs = self._run_phase(phase, micro[phase.stream], scratch[phase.stream])
                    for out in outs:
                        values = {f"{phase.name}/total": out.total.detach().float().mean()}
                        values.update({f"{phase.name}/{term}": v.detach().float().mean()
                                       for term, v in out.terms.items()})
                        for key, value in values.items():
                            sums[key] = sums[key] + value if key in sums else value.clone()
                        last.update(values)
                before, values = self.progress.global_step, None
                self.progress.global_step += k
                if before // t.log_every != self.progress.global_step // t.log_every or first + k == n:
                    values = {key: float(v) for key, v in last.items()}
                    health.check_finite_losses(values, epoch, first + k)
                    acc.log({f"train/{key}": v for key, v in values.items()}, step=self.progress.global_step)
                display.advance(k, values)
        finally:
            batches.close()
        return _mean_stats(acc, sums, n)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, part: str) -> dict[str, float] | None:
        loader = self.eval_loaders.get(part)
        if loader is None:
            return None
        acc = self.accelerator
        self.method.eval()
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        try:
            for batch in loader:
                with acc.autocast():
                    out = self.method.evaluation_step(batch)
                for key, value in out.items():
                    stats[key].append(acc.gather_for_metrics(value.detach()).cpu())
        finally:
            self.method.train()
        summary = self.method.evaluation_summary({k: torch.cat(v) for k, v in stats.items()})
        if "monitor" not in summary:
            raise DafnetError(f"method {self.recipe.method.name!r}: evaluation_summary() has no 'monitor'",
                              hint="return the quantity early stopping minimises under 'monitor'")
        return {k: float(v) for k, v in summary.items()}

    def validate(self, epoch: int) -> dict[str, float]:
        """Evaluate the validation split and update early stopping (and the best weights) with it:
        the SWA average once it has a snapshot (``train.validate_swa``), else the live weights."""
        if not (self.recipe.train.validate_swa and self.averager.snapshots > 0):
            return self._validate_and_track(epoch, {})
        devices = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), \
                averaged_weights(self.averager, self.networks, self._forward_pass_over_training_data):
            distributed.broadcast_buffers(self.accelerator, self.networks.values())
            return self._validate_and_track(epoch, {"validated_swa": 1.0})

    def _validate_and_track(self, epoch: int, row: dict[str, float]) -> dict[str, float]:
        summary = self.evaluate("validation")
        if self.stopper.update(epoch, summary["monitor"]):
            self.best.capture(epoch)  # the weights just validated
        return {**row, **{f"validation/{k}": v for k, v in summary.items()}}

    # ------------------------------------------------------------------ SWA batch statistics
    @torch.no_grad()
    def _forward_pass_over_training_data(self) -> None:
        """One epoch of every active phase, forward only, in training mode."""
        self.method.train()
        batches = self.streams.epoch(derived_seed(self.recipe.train.seed, 0x5A5A))
        try:
            for _ in range(self.streams.iterations):
                fetched, scratch = {}, {}
                for phase in self.active:
                    if phase.stream not in fetched:
                        fetched[phase.stream] = batches.next(phase.stream)
                        scratch[phase.stream] = {}
                    with self.accelerator.autocast():
                        phase.step(fetched[phase.stream], scratch[phase.stream])
        finally:
            batches.close()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        acc, t = self.accelerator, self.recipe.train
        if self.evaluation_only:
            self.console.print(f"method {self.recipe.method.name!r} has no training phases: "
                               "exporting and evaluating it as it is")
            return
        start = self.progress.epochs_done + 1
        with training_display(self.console, acc.is_main_process, t.epochs, start - 1, self.streams.iterations,
                              self.health_signals) as display:
            for epoch in range(start, t.epochs + 1):
                began = time.perf_counter()
                self.method.start_epoch(epoch)
                row = {"epoch": epoch, **self.run_epoch(epoch, display)}
                distributed.broadcast_buffers(acc, self.networks.values())
                if self.averager.update(epoch):
                    row["swa_snapshots"] = self.averager.snapshots
                if epoch % t.validate_every == 0 and "validation" in self.eval_loaders:
                    row.update(self.validate(epoch))
                row["seconds"] = round(time.perf_counter() - began, 3)
                self.progress.history.append(row)
                self.progress.epochs_done = epoch
                self.progress.stopped_early = self.stopper.should_stop(epoch) and epoch < t.epochs
                acc.log({k: v for k, v in row.items() if k != "epoch"}, step=self.progress.global_step)
                if acc.is_main_process:
                    runlog.write_csv(self.paths.log, self.progress.history)
                checkpoint.save_checkpoint(acc, self.paths.state, rundir.recipe_yaml(self.recipe))
                display.end_epoch(row)
                failure = health.diagnose(self.progress.history, t.health, self.health_signals)
                if failure is not None:
                    raise failure
                if self.progress.stopped_early:
                    self.console.print(f"early stopping at epoch {epoch}: no improvement of the monitor by "
                                       f"> {t.min_delta} since epoch {self.stopper.best_epoch}")
                    break

    def finish(self) -> TrainResult:
        acc = self.accelerator
        if self.averager.snapshots > 0:
            self.averager.copy_to_networks()
            recompute_batchnorm(self.networks, self._forward_pass_over_training_data)
            distributed.broadcast_buffers(acc, self.networks.values())
            first = self.recipe.train.swa_start
            weights = {"source": "swa", "snapshots": self.averager.snapshots,
                       "epochs": [max(first, 1), self.progress.epochs_done]}
        elif self.best.available:
            self.best.restore()
            weights = {"source": "best", "epoch": self.best.epoch}
        else:
            weights = {"source": "last", "epoch": self.progress.epochs_done}
        if acc.is_main_process:
            write_export(self.paths.export, networks=self.networks, recipe=self.recipe, facts=self.facts,
                         weights=weights, plans=self.plans)
        acc.wait_for_everyone()

        part = "test" if "test" in self.eval_loaders else ("validation" if "validation" in self.eval_loaders else None)
        summary = self.evaluate(part) if part else {}
        figures: list[Path] = []
        if acc.is_main_process:
            rundir.write_json(self.paths.summary, {"evaluated_on": part, "weights": weights, "summary": summary,
                                                   "best_epoch": self.stopper.best_epoch,
                                                   "epochs_run": self.progress.epochs_done,
                                                   "stopped_early": self.progress.stopped_early})
            if self.recipe.output.figures:
                fig = runlog.plot_loss_curves(self.progress.history, [p.name for p in self.phases],
                                              self.paths.figures / "loss_curves.png")
                figures = [fig] if fig else []
            if summary:
                self.console.print(runlog.summary_table(
                    summary, f"{self.recipe.name}: {part} split, {weights['source']} weights", self.method))
            self.console.print(f"run: {self.paths.root}   export: {self.paths.export}   "
                               f"figures: {self.paths.figures if figures else '(none)'}")
        acc.wait_for_everyone()
        acc.end_training()
        return TrainResult(run_dir=self.paths.root, export_dir=self.paths.export,
                           best_epoch=self.stopper.best_epoch, epochs_run=self.progress.epochs_done,
                           history=list(self.progress.history), summary=summary, evaluated_on=part,
                           weights=weights["source"], stopped_early=self.progress.stopped_early,
                           figures=figures)


def _forget_previous_run_settings() -> None:
    """Let a later train() in the same process use other settings (mixed precision, accumulation):
    Accelerate keeps them in process-wide singletons. The process group (PartialState) stays."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


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
          resume: str | Path | None = None, console: Console | None = None) -> TrainResult:
    """Train ``recipe``'s method, export it and evaluate it. ``resume=RUN_DIR`` continues a run
    exactly (``recipe`` may then be None: the run's own recipe, or one that only raises
    ``train.epochs``/``patience``)."""
    from dafnet.config.resolve import load_recipe, resolve

    if recipe is None and resume is None:
        raise DafnetError("train() needs a recipe or resume=RUN_DIR")
    if resume is not None and recipe is None:
        recipe = resume_recipe(resume)
    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)
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
        return session.finish()
    except BaseException as exc:
        explained = after_failure(exc, root, paths, fresh, resume is None, console)
        if explained is None:
            raise
        raise explained from exc


def _start(recipe: Recipe, paths: rundir.RunPaths, console: Console, resume: bool) -> _Session:
    """The session, with a resumed run's state loaded."""
    session = _Session(recipe, paths, console, resume=resume)
    session.export_only = resume and continue_run(session, recipe, paths)
    if session.skipped:
        session.console.print("skipping phases with empty streams: " +
                              ", ".join(f"{p.name} ({p.stream})" for p in session.skipped))
    return session
