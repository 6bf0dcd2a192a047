"""The training loop of a :class:`~dafnet.engine.session.TrainingSession`: epochs of iterations,
each running the method's active phases (one optimizer step of a group per phase), validation,
the run's log and checkpoint after every epoch, early stopping and the health checks."""

from __future__ import annotations

import time

import torch

from dafnet.engine import checkpoint, distributed, health, rundir
from dafnet.engine import logging as runlog
from dafnet.engine.progress import training_display
from dafnet.engine.streams import derived_seed
from dafnet.errors import DafnetError
from dafnet.interfaces.method import LossOutput


def _mean_stats(accelerator, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    if not sums or count == 0:
        return {}
    keys = list(sums)
    stacked = torch.stack([sums[k].float() for k in keys]) / count
    stacked = accelerator.reduce(stacked, reduction="mean")
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


def run_phase(session, phase, micro_batches: list, scratches: list[dict]) -> list[LossOutput]:
    """Forward/backward the phase on each micro-batch, then one optimizer step of its group.

    With gradient accumulation the micro-batches of one step all see the same weights,
    so ``accumulation x batch`` equals one batch of that size (for methods without
    batch statistics), also when later phases use the networks this phase updates.
    """
    acc, outputs = session.accelerator, []
    scale = acc.gradient_accumulation_steps / len(micro_batches)  # backward divides by the steps
    stepped = False
    with session.freezer.only(phase.group), distributed.no_sync(session.prepared.values()):
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
        distributed.average_gradients(acc, session.group_params[phase.group])
        session.optimizers[phase.group].step()
    session.optimizers[phase.group].zero_grad(set_to_none=True)
    return outputs


def run_epoch(session, epoch: int, display) -> dict[str, float]:
    """``iterations`` batches per stream; every ``gradient_accumulation_steps`` of them make
    one optimizer step per phase."""
    acc, t = session.accelerator, session.recipe.train
    session.method.train()
    batches = session.streams.epoch(epoch)
    n, accum = session.streams.iterations, t.gradient_accumulation_steps
    sums: dict[str, torch.Tensor] = {}
    display.start_epoch(n)
    try:
        for first in range(0, n, accum):
            k = min(accum, n - first)
            streams = list(dict.fromkeys(p.stream for p in session.active))
            micro = {s: [batches.next(s) for _ in range(k)] for s in streams}
            scratch = {s: [{} for _ in range(k)] for s in streams}
            last: dict[str, torch.Tensor] = {}
            for phase in session.active:
                outs = run_phase(session, phase, micro[phase.stream], scratch[phase.stream])
                for out in outs:
                    values = {f"{phase.name}/total": out.total.detach().float().mean()}
                    values.update({f"{phase.name}/{term}": v.detach().float().mean()
                                   for term, v in out.terms.items()})
                    for key, value in values.items():
                        sums[key] = sums[key] + value if key in sums else value.clone()
                    last.update(values)
            before, values = session.progress.global_step, None
            session.progress.global_step += k
            if before // t.log_every != session.progress.global_step // t.log_every or first + k == n:
                values = {key: float(v) for key, v in last.items()}
                health.check_finite_losses(values, epoch, first + k)
                acc.log({f"train/{key}": v for key, v in values.items()}, step=session.progress.global_step)
            display.advance(k, values)
    finally:
        batches.close()
    return _mean_stats(acc, sums, n)


@torch.no_grad()
def forward_pass_over_training_data(session) -> None:
    """One epoch of every active phase, forward only, in training mode."""
    session.method.train()
    batches = session.streams.epoch(derived_seed(session.recipe.train.seed, 0x5A5A))
    try:
        for _ in range(session.streams.iterations):
            fetched, scratch = {}, {}
            for phase in session.active:
                if phase.stream not in fetched:
                    fetched[phase.stream] = batches.next(phase.stream)
                    scratch[phase.stream] = {}
                with session.accelerator.autocast():
                    phase.step(fetched[phase.stream], scratch[phase.stream])
    finally:
        batches.close()


def fit(session) -> None:
    """Train the epochs left (all of them, or those after a resumed run's last one)."""
    acc, t = session.accelerator, session.recipe.train
    if session.evaluation_only:
        session.console.print(f"method {session.recipe.method.name!r} has no training phases: "
                              "exporting and evaluating it as it is")
        return
    start = session.progress.epochs_done + 1
    with training_display(session.console, acc.is_main_process, t.epochs, start - 1, session.streams.iterations,
                          session.health_signals) as display:
        for epoch in range(start, t.epochs + 1):
            began = time.perf_counter()
            session.method.start_epoch(epoch)
            row = {"epoch": epoch, **run_epoch(session, epoch, display)}
            distributed.broadcast_buffers(acc, session.networks.values())
            if session.averager.update(epoch):
                row["swa_snapshots"] = session.averager.snapshots
            if epoch % t.validate_every == 0 and "validation" in session.eval_loaders:
                row.update(session.validate(epoch))
            row["seconds"] = round(time.perf_counter() - began, 3)
            session.progress.history.append(row)
            session.progress.epochs_done = epoch
            session.progress.stopped_early = session.stopper.should_stop(epoch) and epoch < t.epochs
            acc.log({k: v for k, v in row.items() if k != "epoch"}, step=session.progress.global_step)
            if acc.is_main_process:
                runlog.write_csv(session.paths.log, session.progress.history)
            checkpoint.save_checkpoint(acc, session.paths.state, rundir.recipe_yaml(session.recipe))
            display.end_epoch(row)
            failure = health.diagnose(session.progress.history, t.health, session.health_signals)
            if failure is not None:
                raise failure
            if session.progress.stopped_early:
                session.console.print(f"early stopping at epoch {epoch}: no improvement of the monitor by "
                                      f"> {t.min_delta} since epoch {session.stopper.best_epoch}")
                break


__all__ = ["fit", "forward_pass_over_training_data", "run_epoch", "run_phase"]
