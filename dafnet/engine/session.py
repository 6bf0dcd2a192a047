"""One ``train()`` call's prepared objects: the accelerator, the data splits, the method, its
optimizers, data loaders and resumable state (docs/engine.md), and the evaluation of a split.
The training loop over them is :mod:`dafnet.engine.loop`."""

from __future__ import annotations

from collections import defaultdict

import torch
from rich.console import Console

from dafnet.config.schema import Recipe
from dafnet.engine import checkpoint, distributed, loop, rundir
from dafnet.engine import logging as runlog
from dafnet.engine.compiling import compile_networks
from dafnet.engine.early_stopping import BestWeights, EarlyStopping
from dafnet.engine.optim import Freezer, build_optimizers, check_contract
from dafnet.engine.streams import TrainStreams, eval_loader
from dafnet.engine.swa import WeightAverager, averaged_weights
from dafnet.errors import DafnetError


class TrainingSession:
    """One train() call: the prepared objects; :meth:`fit` runs the loop over epochs."""

    def __init__(self, recipe: Recipe, paths: rundir.RunPaths, console: Console, resume: bool) -> None:
        from accelerate.utils import set_seed

        self.recipe, self.paths = recipe, paths
        self.accelerator = acc = _accelerator(recipe, paths)
        self.console = console if acc.is_main_process else Console(quiet=True)
        set_seed(recipe.train.seed)
        self._load_splits(resume)
        self._build_method()
        self._prepare()
        self._register_state()
        if acc.is_main_process and not resume:
            rundir.write_run_files(paths, recipe, acc, self.split_ids, self.plans)
        acc.wait_for_everyone()
        if recipe.output.tensorboard:
            acc.init_trackers("tensorboard", config=runlog.tracker_config(recipe))

    # ------------------------------------------------------------------ setting up
    def _load_splits(self, resume: bool) -> None:
        """The data source's facts, its planned spacing (a resumed run's stored one) and the splits."""
        from dafnet.assemble import build_data_source
        from dafnet.data.plans import plan_data
        from dafnet.data.splits import split_data

        source, self.facts = build_data_source(self.recipe)
        self.plans = plan_data(source, self.recipe.data, rundir.read_plans(self.paths) if resume else None)
        subjects = source.load()
        by_id = {s.id: s for s in subjects}
        ids = split_data(subjects, self.recipe.data)
        self.split_ids = ids
        self.splits = {part: [by_id[i] for i in part_ids] for part, part_ids in ids.items()}
        if not self.splits["train"]:
            raise DafnetError("the training split is empty", hint="check data.split")

    def _build_method(self) -> None:
        """The method, its networks, phases and groups (checked), and the training streams."""
        from dafnet.assemble import build_method

        recipe, t, acc = self.recipe, self.recipe.train, self.accelerator
        slices_device = str(acc.device) if recipe.data.slices_on_device else None  # data.slices_on_device
        self.method = method = build_method(recipe, self.facts, slices_device=slices_device)
        self.networks = method.networks()
        datasets = method.train_streams(self.splits["train"])
        self.phases = method.phases()
        self.health_signals = method.health_signals()
        self.groups = method.optimizer_groups()
        check_contract(recipe.method.name, self.networks, self.groups, self.phases, datasets)
        self.evaluation_only = not self.phases
        self.streams = None if self.evaluation_only else TrainStreams(
            acc, datasets, batch_size=t.batch_size, collate=method.collate,
            num_workers=recipe.data.num_workers, seed=t.seed, iterations_per_epoch=t.iterations_per_epoch,
            on_device=method.on_device)
        loaders = self.streams.loaders if self.streams is not None else {}
        self.active = [p for p in self.phases if p.stream in loaders]
        self.skipped = [p for p in self.phases if p.stream not in loaders]
        if not self.active and not self.evaluation_only:
            raise DafnetError(f"every training stream of method {recipe.method.name!r} is empty "
                              f"({', '.join(datasets)})", hint="check the data source and data.annotation_fraction")

    def _prepare(self) -> None:
        """The method on the device (checked by its summary), its networks compiled (``train.compile``),
        the prepared networks and optimizers, the evaluation loaders."""
        acc, t, method = self.accelerator, self.recipe.train, self.method
        method.to(acc.device)
        if t.memory_format == "channels_last":
            method.to(memory_format=torch.channels_last)
        method.summary()  # a batch-1 forward of every role: a component breaking its contract fails here, named
        eager = compile_networks(self.networks, t.compile, acc.device)  # in place, after the summary's forward
        if eager:
            self.console.print(f"train.compile: {', '.join(eager)} run eagerly (a forward of torch.nn's own, "
                               "which torch.compile skips)")
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
                                                      self.recipe.data.num_workers)

    def _register_state(self) -> None:
        """The resumable state: progress, early stopping, the best and the averaged weights."""
        t = self.recipe.train
        self.progress = checkpoint.TrainProgress()
        self.stopper = EarlyStopping(t.patience, t.min_delta)
        self.best = BestWeights(self.networks)
        self.averager = WeightAverager(self.networks, t.swa_start)
        for obj in (self.progress, self.stopper, self.best, self.averager):
            self.accelerator.register_for_checkpointing(obj)

    # ------------------------------------------------------------------ training
    def fit(self) -> None:
        """Train the remaining epochs (:func:`dafnet.engine.loop.fit`)."""
        loop.fit(self)

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
                averaged_weights(self.averager, self.networks,
                                 lambda: loop.forward_pass_over_training_data(self)):
            distributed.broadcast_buffers(self.accelerator, self.networks.values())
            return self._validate_and_track(epoch, {"validated_swa": 1.0})

    def _validate_and_track(self, epoch: int, row: dict[str, float]) -> dict[str, float]:
        summary = self.evaluate("validation")
        monitor = summary["monitor"]
        self.stopper.update(epoch, monitor)  # early stopping: improvements by more than min_delta
        if self.best.improves(monitor):  # the weights kept: the lowest monitor validated (no min_delta)
            self.best.capture(epoch, monitor)  # the weights just validated
        return {**row, **{f"validation/{k}": v for k, v in summary.items()}}


def _accelerator(recipe: Recipe, paths: rundir.RunPaths):
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    t = recipe.train
    _forget_previous_run_settings()
    return Accelerator(
        mixed_precision=t.mixed_precision, cpu=t.cpu,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=t.gradient_accumulation_steps, sync_with_dataloader=False),
        log_with=["tensorboard"] if recipe.output.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(paths.root), logging_dir=str(paths.root)))


def _forget_previous_run_settings() -> None:
    """Let a later train() in the same process use other settings (mixed precision, accumulation):
    Accelerate keeps them in process-wide singletons. The process group (PartialState) stays."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


__all__ = ["TrainingSession"]
