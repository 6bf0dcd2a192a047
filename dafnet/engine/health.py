"""Training health checks: a run whose losses go non-finite, whose validation Dice stays under a
floor, whose label-free signals (the method's :class:`~dafnet.interfaces.method.HealthBound`) leave
their limits, or whose supervised loss does not fall (or climbs back after falling) fails with
:class:`~dafnet.errors.TrainingFailed` instead of exporting a model that does not work.

The checks read only the engine's per-epoch log rows (``<phase>/<term>`` training means,
``validation/<key>``) and the keys the method declares in
:meth:`~dafnet.interfaces.method.Method.health_signals`; thresholds are ``train.health``.
"""

from __future__ import annotations

import math
import time

from dafnet.config.schema import HealthConfig
from dafnet.errors import DafnetError, TrainingFailed
from dafnet.interfaces.method import HealthSignals

_NOT_LOSSES = ("epoch", "seconds", "swa_snapshots")
_HINT = ("the run is not learning: check the data and labels, lower train.lr or try another train.seed; "
         "the log is in log.csv and the last epoch's state in state/. If this is expected, relax train.health "
         "(see docs/recipes.md) or set train.health.enabled=false")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_finite_losses(values: dict[str, float], epoch: int, iteration: int) -> None:
    """Logged training losses of one iteration: any NaN or inf stops the run at once (always)."""
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise TrainingFailed(f"non-finite loss at epoch {epoch}, iteration {iteration}: {bad}",
                             hint="lower train.lr, check the data, use mixed_precision: no, or check the components "
                                  "of the terms named (a plugin returning NaN, say)",
                             check="non_finite", epoch=epoch,
                             details={"iteration": iteration, "values": {k: str(v) for k, v in bad.items()}})


def diagnose(history: list[dict], config: HealthConfig, signals: HealthSignals) -> TrainingFailed | None:
    """The failure the latest row of ``history`` (one dict per epoch, as in log.csv) shows, or None."""
    if not history:
        return None
    row = history[-1]
    epoch = row["epoch"]
    losses = {k: v for k, v in row.items()
              if k not in _NOT_LOSSES and not k.startswith("validation/") and not _finite(v)}
    if losses:
        return TrainingFailed(f"non-finite training loss (mean over epoch {epoch}): {losses}",
                              hint="lower train.lr, check the data, or use mixed_precision: no",
                              check="non_finite", epoch=epoch,
                              details={"values": {k: str(v) for k, v in losses.items()}})
    if not config.enabled:
        return None
    if "validation/monitor" in row and not _finite(row["validation/monitor"]):
        return TrainingFailed(f"training health check 'non_finite' at epoch {epoch}: the validation monitor is "
                              f"{row['validation/monitor']}", hint=_HINT, check="non_finite", epoch=epoch,
                              details={"values": {"validation/monitor": str(row["validation/monitor"])}})
    if epoch <= config.grace_epochs:
        return None
    return (_dice_floor(history, config, signals) or _bounds(history, config, signals)
            or _loss_progress(history, config, signals))


def _latest_failing(history: list[dict], config: HealthConfig, key: str, fails) -> list[tuple[int, float]]:
    """(epoch, value) of the latest validated epochs after the grace period, while ``fails(value)``."""
    validated = [(r["epoch"], r[key]) for r in history if r["epoch"] > config.grace_epochs and _finite(r.get(key))]
    out: list[tuple[int, float]] = []
    for epoch, value in reversed(validated):
        if not fails(value):
            break
        out.insert(0, (epoch, value))
    return out


def _dice_floor(history: list[dict], config: HealthConfig, signals: HealthSignals) -> TrainingFailed | None:
    if signals.validation_dice is None:
        return None
    key = f"validation/{signals.validation_dice}"
    low = _latest_failing(history, config, key, lambda dice: dice / 100.0 < config.dice_floor)
    if len(low) < config.patience_epochs:
        return None
    epochs, values = [e for e, _ in low], [round(v, 3) for _, v in low]
    return TrainingFailed(
        f"training health check 'dice_floor' at epoch {epochs[-1]}: the validation Dice {key} stayed below "
        f"{100 * config.dice_floor:g}% for {len(low)} validated epochs ({epochs[0]}-{epochs[-1]}, after the "
        f"{config.grace_epochs} grace epochs): {values}", hint=_HINT, check="dice_floor", epoch=epochs[-1],
        details={"key": key, "floor_percent": 100 * config.dice_floor, "epochs": epochs, "values": values})


def _bounds(history: list[dict], config: HealthConfig, signals: HealthSignals) -> TrainingFailed | None:
    for bound in signals.bounds:
        key = f"validation/{bound.key}"
        out = _latest_failing(history, config, key, bound.violated)
        if len(out) < config.patience_epochs:
            continue
        epochs, values = [e for e, _ in out], [round(v, 4) for _, v in out]
        pairs = (("at least", bound.lower), ("at most", bound.upper))
        limits = " and ".join(f"{word} {limit:g}" for word, limit in pairs if limit is not None)
        return TrainingFailed(
            f"training health check 'bound' at epoch {epochs[-1]}: {bound.meaning or key} ({key}) was outside its "
            f"limits ({limits}) for {len(out)} validated epochs ({epochs[0]}-{epochs[-1]}, after the "
            f"{config.grace_epochs} grace epochs): {values}. No labels are needed to see this: the representation "
            "collapsed", hint=_HINT, check="bound", epoch=epochs[-1],
            details={"key": key, "lower": bound.lower, "upper": bound.upper, "epochs": epochs, "values": values})
    return None


def _loss_progress(history: list[dict], config: HealthConfig, signals: HealthSignals) -> TrainingFailed | None:
    if config.loss_min_fall == 0:
        return None
    w = config.loss_window_epochs
    for key in signals.supervised_losses:
        series = [r[key] for r in history if _finite(r.get(key))]
        if len(series) < 2 * w:
            continue
        start, latest = _mean(series[:w]), _mean(series[-w:])
        if start <= 0:
            continue
        low = min(_mean(series[i:i + w]) for i in range(len(series) - w + 1))
        fall = start - low
        numbers = {"key": key, "window_epochs": w, "start": round(start, 4), "lowest": round(low, 4),
                   "latest": round(latest, 4)}
        epoch = history[-1]["epoch"]
        if fall > config.loss_min_fall * start and latest - low >= config.loss_max_rebound * fall:
            return TrainingFailed(
                f"training health check 'loss_rebound' at epoch {epoch}: the supervised loss {key} fell from "
                f"{start:.4g} (mean of its first {w} epochs) to {low:.4g} and climbed back to {latest:.4g} (mean of "
                f"its last {w}): {(latest - low) / fall:.0%} of its fall, limit {config.loss_max_rebound:.0%}",
                hint=_HINT, check="loss_rebound", epoch=epoch, details=numbers)
        if latest > (1 - config.loss_min_fall) * start:
            return TrainingFailed(
                f"training health check 'loss_not_falling' at epoch {epoch}: the supervised loss {key} is "
                f"{latest:.4g} (mean of its last {w} epochs) against {start:.4g} at the start (first {w}): "
                f"not {config.loss_min_fall:.0%} lower", hint=_HINT, check="loss_not_falling", epoch=epoch,
                details=numbers)
    return None


def validation_decline(history: list[dict], config: HealthConfig) -> dict | None:
    """The late decline of a run: its last validated monitor at least ``config.decline_warning`` above the lowest
    one (the first epoch that reached it), as a dict for summary.json, or None (no decline, no validation, or
    the warning off)."""
    validated = [r for r in history if _finite(r.get("validation/monitor"))]
    if not config.enabled or config.decline_warning == 0 or not validated:
        return None
    best, last = min(validated, key=lambda r: r["validation/monitor"]), validated[-1]
    if last["validation/monitor"] - best["validation/monitor"] < config.decline_warning:
        return None
    return {"best_epoch": best["epoch"], "best_monitor": round(best["validation/monitor"], 4),
            "last_epoch": last["epoch"], "last_monitor": round(last["validation/monitor"], 4)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def failure_record(exc: DafnetError) -> dict:
    """What ``failed.json`` holds: the error and hint, when, and a health check's name, epoch and numbers."""
    record = {"error": exc.message, "hint": exc.hint, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if isinstance(exc, TrainingFailed):
        record.update({"check": exc.check, "epoch": exc.epoch, "details": exc.details})
    return record


def record_failure(paths, exc: TrainingFailed, console) -> None:
    """Mark the run failed (``failed.json``, main process); its log and state stay, nothing is exported."""
    from accelerate import PartialState

    from dafnet.engine.rundir import write_json

    if not PartialState().is_main_process or not paths.root.exists():
        return
    write_json(paths.failed, failure_record(exc))
    kept = ", ".join(p.name for p in (paths.log, paths.state) if p.exists()) or "no epoch finished"
    console.print(f"[red]run failed ({exc.check}, epoch {exc.epoch}); nothing exported.[/] "
                  f"{paths.failed} says why; kept: {kept}")


__all__ = ["check_finite_losses", "diagnose", "failure_record", "record_failure", "validation_decline"]
