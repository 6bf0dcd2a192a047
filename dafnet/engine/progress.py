"""What training shows while it runs (main process only).

On a terminal: rich's live bars, one for the epochs (with the validation monitor) and one for
the iterations of the current epoch (with the phases' losses). Elsewhere (a pipe, a file,
``nohup``, CI, an experiment cell's log) a live display prints nothing until it ends, so there
training prints one plain line per epoch instead::

    epoch 3/40  labelled/generator 7.912 (sup 0.4107)  val dice_fused 56.21  monitor 0.4379  6.6 s

(DAFNet's also has ``unlabelled/generator``; :func:`epoch_line` says what a line holds).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dafnet.console import is_live
from dafnet.interfaces.method import HealthSignals


def epoch_line(row: dict, epochs: int, signals: HealthSignals | None = None) -> str:
    """One log row as a line: epoch/epochs; the main losses: the total of each phase with a
    supervised loss term (``signals.supervised_losses``, with that term), or of every phase when
    the method names none; when validated, the validation Dice ``signals.validation_dice`` and
    the monitor; the epoch's seconds."""
    signals = signals or HealthSignals()
    supervised = {key.rpartition("/")[0]: key for key in signals.supervised_losses if key in row}
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key, value in row.items():
        phase = key[:-len("/total")]
        if key.endswith("/total") and not key.startswith("validation/") and (phase in supervised or not supervised):
            term = supervised.get(phase)
            parts.append(f"{phase} {value:.4g}" + (f" ({term.rpartition('/')[2]} {row[term]:.4g})" if term else ""))
    dice = row.get(f"validation/{signals.validation_dice}") if signals.validation_dice else None
    if dice is not None:
        parts.append(f"val {signals.validation_dice} {dice:.2f}" + (" (swa)" if row.get("validated_swa") else ""))
    if "validation/monitor" in row:
        parts.append(f"monitor {row['validation/monitor']:.4f}")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


class LiveBars:
    """Rich's live progress bars (a terminal)."""

    def __init__(self, console: Console, enabled: bool, epochs: int, done: int, iterations: int) -> None:
        self.bars = Progress(TextColumn("[bold]{task.description:<10}"), BarColumn(bar_width=24),
                             MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                             console=console, disable=not enabled, transient=False, refresh_per_second=4)
        self.epochs = self.bars.add_task("epochs", total=epochs, completed=done, info="")
        self.iterations = self.bars.add_task("iterations", total=iterations, info="")

    def __enter__(self) -> LiveBars:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def start_epoch(self, iterations: int) -> None:
        self.bars.reset(self.iterations, total=iterations, info="")

    def advance(self, iterations: int, losses: dict[str, float] | None = None) -> None:
        """``iterations`` more done; ``losses``: the last logged values (``<phase>/<term>``)."""
        if losses is not None:
            totals = [(key[:-len("/total")], v) for key, v in losses.items() if key.endswith("/total")]
            self.bars.update(self.iterations, info="  ".join(f"{key}={v:.3g}" for key, v in totals[:3]))
        self.bars.advance(self.iterations, iterations)

    def end_epoch(self, row: dict) -> None:
        monitor = row.get("validation/monitor")
        self.bars.update(self.epochs, completed=row["epoch"], info="" if monitor is None else f"monitor={monitor:.4f}")


class EpochLines:
    """One plain line per epoch (not a terminal)."""

    def __init__(self, console: Console, enabled: bool, epochs: int, signals: HealthSignals | None) -> None:
        self.console, self.enabled, self.epochs, self.signals = console, enabled, epochs, signals

    def __enter__(self) -> EpochLines:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start_epoch(self, iterations: int) -> None:
        pass

    def advance(self, iterations: int, losses: dict[str, float] | None = None) -> None:
        pass

    def end_epoch(self, row: dict) -> None:
        if self.enabled:
            self.console.print(epoch_line(row, self.epochs, self.signals), markup=False, highlight=False,
                               soft_wrap=True)  # rich flushes: the line is in the log at once


def training_display(console: Console, enabled: bool, epochs: int, done: int, iterations: int,
                     signals: HealthSignals | None = None) -> LiveBars | EpochLines:
    """Live bars on a terminal, else one line per epoch. ``enabled``: the main process;
    ``done``: epochs already run (a resume); ``signals``: the method's health signals, which
    name its supervised losses and validation Dice (see :func:`epoch_line`)."""
    if is_live(console):
        return LiveBars(console, enabled, epochs, done, iterations)
    return EpochLines(console, enabled, epochs, signals)


__all__ = ["EpochLines", "LiveBars", "epoch_line", "training_display"]
