"""The run's loss-curve figure: a panel per phase and one for validation, whose monitored
quantity (what early stopping minimises) has its own y-axis."""

from __future__ import annotations

from dafnet.engine.logging import loss_curves_figure, plot_loss_curves


def history(monitor: bool = True, dice: bool = True) -> list[dict]:
    rows = []
    for epoch in range(1, 6):
        row = {"epoch": epoch, "generator/total": 2.0 / epoch, "generator/l1": 1.0 / epoch}
        if dice:
            row["validation/dice_fused"] = 40.0 + epoch
        if monitor:
            row["validation/monitor"] = 0.6 - epoch / 100
        rows.append(row)
    return rows


def labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_the_monitor_has_its_own_y_axis(tmp_path):
    fig = loss_curves_figure(history(), ["generator"])
    titled = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(titled) == {"generator", "validation"}
    validation = titled["validation"]
    [twin] = [ax for ax in validation.get_shared_x_axes().get_siblings(validation) if ax is not validation]
    assert labels(validation) == ["dice_fused"] and labels(twin) == ["monitor (right axis)"]
    low, high = twin.get_ylim()
    assert low <= 0.55 and high >= 0.59 and high < 1  # its own scale, not the Dice's 41-45
    assert validation.get_ylim()[0] > 30
    assert "monitor" in twin.get_ylabel()
    legend = [t.get_text() for t in validation.get_legend().get_texts()]
    assert legend == ["dice_fused", "monitor (right axis)"]  # one legend for both axes
    assert labels(titled["generator"]) == ["total", "l1"]
    png = plot_loss_curves(history(), ["generator"], tmp_path / "figures" / "loss_curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list((tmp_path / "figures").iterdir()) == [png]


def test_a_validation_panel_of_the_monitor_alone_needs_no_second_axis():
    for rows in (history(dice=False), history(monitor=False)):
        fig = loss_curves_figure(rows, ["generator"])
        assert len(fig.axes) == 2  # the generator panel and the validation panel, no twin
    assert loss_curves_figure([], ["generator"]) is None
