"""Training health checks: each check on fabricated log rows, and a toy run that fails one."""

from __future__ import annotations

import json

import pytest
import yaml

from dafnet.config.schema import HealthConfig
from dafnet.engine.health import check_finite_losses, diagnose
from dafnet.errors import TrainingFailed
from dafnet.interfaces import HealthBound, HealthSignals

SIGNALS = HealthSignals(supervised_losses=("gen/sup",), validation_dice="dice")


def rows(sup: list[float], dice: list[float] | None = None) -> list[dict]:
    """log.csv-like rows: a supervised loss per epoch, a validation Dice (percent) and its monitor."""
    out = []
    for i, s in enumerate(sup):
        row = {"epoch": i + 1, "gen/total": 2 * s, "gen/sup": s, "seconds": 1.0}
        if dice is not None:
            row.update({"validation/dice": dice[i], "validation/monitor": 1 - dice[i] / 100})
        out.append(row)
    return out


def history_until_failure(history, config=None, signals=SIGNALS):
    """diagnose() after every epoch, as the engine calls it: (epoch it tripped, failure) or (None, None)."""
    config = HealthConfig() if config is None else config
    for end in range(1, len(history) + 1):
        failure = diagnose(history[:end], config, signals)
        if failure is not None:
            return history[end - 1]["epoch"], failure
    return None, None


def test_a_learning_run_passes_every_check():
    sup = [1.8 - 0.02 * i for i in range(40)]
    dice = [0.02, 41, 28, 34, 27, 24] + [20 + (15 if i % 2 else -15) + i for i in range(34)]  # swings, never ~0
    assert history_until_failure(rows(sup, dice)) == (None, None)


def test_non_finite_loss_or_monitor_stops_at_once():
    history = rows([1.0, float("nan")], [30, 30])
    epoch, failure = history_until_failure(history)
    assert (epoch, failure.check) == (2, "non_finite") and "gen/sup" in failure.message
    history = rows([1.0, 0.9], [30, 30])
    history[1]["validation/monitor"] = float("inf")
    epoch, failure = history_until_failure(history)
    assert (epoch, failure.check) == (2, "non_finite") and "monitor" in failure.message
    with pytest.raises(TrainingFailed, match="iteration 7") as info:
        check_finite_losses({"gen/total": float("nan")}, epoch=3, iteration=7)
    assert info.value.check == "non_finite" and info.value.epoch == 3


def test_dice_under_the_floor_after_the_grace_period_fails_after_patience():
    dice = [30.0] * 14 + [0.1] * 20  # the Dice collapses at epoch 15
    sup = [1.8 - 0.02 * i for i in range(34)]
    epoch, failure = history_until_failure(rows(sup, dice))
    assert (epoch, failure.check) == (24, "dice_floor")
    assert failure.details["epochs"] == list(range(15, 25)) and "below 2%" in failure.message
    # in the grace period a Dice of ~0 is no failure; afterwards the count starts anew
    early = [0.0] * 12 + [30.0] * 20
    assert history_until_failure(rows(sup[:32], early)) == (None, None)
    config = HealthConfig(grace_epochs=0, patience_epochs=3)
    epoch, failure = history_until_failure(rows(sup[:5], [0.0] * 5), config)
    assert (epoch, failure.check) == (3, "dice_floor")
    # a method that declares no Dice is not judged by it
    assert history_until_failure(rows(sup, dice), signals=HealthSignals(("gen/sup",))) == (None, None)


def test_a_label_free_signal_outside_its_bounds_fails_after_patience():
    """The DAFNet collapse no label shows: validation Dice ~11%, the aligner's displacement 0.3 of the slice."""
    sup = [1.8 - 0.02 * i for i in range(34)]
    history = rows(sup, [11.0] * 34)
    for i, row in enumerate(history):
        row["validation/shift"] = 0.03 if i < 4 else 0.3  # diverged at epoch 5
        row["validation/coverage"] = 0.5
    bounds = (HealthBound("shift", upper=0.15, meaning="the aligner's mean displacement"),
              HealthBound("coverage", lower=0.05))
    signals = HealthSignals(("gen/sup",), "dice", bounds=bounds)
    epoch, failure = history_until_failure(history, signals=signals)
    assert (epoch, failure.check) == (20, "bound")  # grace 10, then 10 validated epochs out of bounds
    assert failure.details["key"] == "validation/shift" and failure.details["epochs"] == list(range(11, 21))
    assert "the aligner's mean displacement" in failure.message and "at most 0.15" in failure.message
    assert history_until_failure(history) == (None, None)  # without the bounds the Dice check lets it pass
    for row in history:
        row["validation/shift"], row["validation/coverage"] = 0.03, 0.01
    epoch, failure = history_until_failure(history, signals=signals)
    assert failure.details["key"] == "validation/coverage" and "at least 0.05" in failure.message
    # back inside the bounds: the count starts anew
    for i, row in enumerate(history):
        row["validation/coverage"] = 0.01 if i % 9 == 8 else 0.4
    assert history_until_failure(history, signals=signals) == (None, None)
    assert HealthBound("x", lower=0, upper=1).violated(1.5) and not HealthBound("x").violated(1e9)


def test_a_supervised_loss_that_does_not_fall_fails():
    sup = [1.0, 1.02, 0.99] * 5
    epoch, failure = history_until_failure(rows(sup), HealthConfig(grace_epochs=5))
    assert (epoch, failure.check) == (6, "loss_not_falling")
    assert failure.details["key"] == "gen/sup" and "not 5% lower" in failure.message
    assert history_until_failure(rows(sup), HealthConfig(grace_epochs=5, loss_min_fall=0)) == (None, None)
    assert history_until_failure(rows(sup), HealthConfig(enabled=False)) == (None, None)


def test_a_supervised_loss_that_climbs_back_fails():
    # the reported collapse: down to 0.62 by epoch 7, back to about 1 by epoch 20
    sup = [1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.62, 0.62, 0.63, 0.66, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0, 1.0, 1.0]
    epoch, failure = history_until_failure(rows(sup))
    assert failure.check == "loss_rebound" and epoch == 18  # (0.983 - 0.623) / (1.1 - 0.623) >= 75%
    assert failure.details["lowest"] == pytest.approx(0.623, abs=1e-3)
    # noise around a plateau reached after falling is no rebound
    plateau = [1.2, 1.1, 1.0] + [0.6 + (0.05 if i % 2 else -0.05) for i in range(30)]
    assert history_until_failure(rows(plateau)) == (None, None)


def _failing_toy(tmp_path, monkeypatch):
    """The toy engine method with its l1 term declared supervised, at a learning rate too small to move it."""
    from test_engine import ToyMethod, toy_recipe

    monkeypatch.setattr(ToyMethod, "health_signals", lambda self: HealthSignals(supervised_losses=("generator/l1",)),
                        raising=False)
    return toy_recipe(tmp_path, train={"epochs": 4, "lr": 1e-12,
                                       "health": {"grace_epochs": 1, "loss_window_epochs": 1}})


def test_a_failing_run_stops_marks_itself_failed_and_exports_nothing(tmp_path, monkeypatch):
    from test_engine import quiet

    from dafnet.engine import train

    recipe = _failing_toy(tmp_path, monkeypatch)
    console = quiet()
    with pytest.raises(TrainingFailed, match="'loss_not_falling' at epoch 2: the supervised loss generator/l1") as info:
        train(recipe, run_dir=tmp_path / "run", console=console)
    assert info.value.epoch == 2
    run = tmp_path / "run"
    failed = json.loads((run / "failed.json").read_text())
    assert failed["check"] == "loss_not_falling" and failed["epoch"] == 2 and failed["details"]["key"] == "generator/l1"
    assert (run / "log.csv").read_text().count("\n") == 3 and (run / "state").is_dir()  # header + 2 epochs
    assert not (run / "export").exists() and not (run / "summary.json").exists()
    assert "nothing exported" in console.file.getvalue()
    # resumed with the check relaxed, it is no longer failed and finishes normally
    result = train(resume=run, recipe=recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"health": recipe.train.health.model_copy(update={"enabled": False})})}), console=quiet())
    assert result.epochs_run == 4 and (run / "export").is_dir() and not (run / "failed.json").exists()


def test_the_cli_exits_2_with_the_check_named(tmp_path, monkeypatch, capsys):
    from _cli import run_cli

    recipe = _failing_toy(tmp_path, monkeypatch)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    code, out, err = run_cli(capsys, "train", path, "--run-dir", tmp_path / "run")
    text = " ".join((out + err).split())
    assert code == 2 and "loss_not_falling" in text and "nothing exported" in text
    assert not (tmp_path / "run" / "export").exists()
