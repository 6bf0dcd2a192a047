"""What limits a trained DAFNet's aligner: its error against the truth beside three floors.

    python benchmarks/alignment_floors.py RUN [RUN ...] [--split validation] [--steps 400]

For every evaluation pair of RUN's split (data whose source knows the truth's coordinates, e.g. the
phantom), over the target's labelled foreground (pixels pooled; median and 95th percentile in mm, as
``dafnet evaluate --metric alignment``):

* ``identity``: no alignment;
* ``aligner``: the trained network's TPS (what the metric reports);
* ``objective``: per pair, the TPS offsets that minimise the alignment objective the aligner is trained
  with (mean |Align(s_m -> s_t) - s_t| over the learned anatomies; Adam from the identity): what a
  perfect optimiser of that objective would reach on these anatomies;
* ``masks``: the same objective on the true one-hot masks of both slices (Gaussian-blurred, sigma 2 px):
  what it would reach if the two modalities' anatomies agreed as their labels do;
* ``tps_floor``: per pair, the offsets fitted to the truth's coordinates themselves: what the TPS of
  this grid can represent.

If ``objective`` is no better than ``aligner`` the network already reaches its objective's optimum and
the objective (the anatomies it compares) is the limit, not the aligner; ``masks`` and ``tps_floor``
bound what better anatomies and the TPS itself allow. A diagnostic (seconds a run on the CPU), not a
timed benchmark.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from dafnet.components.aligners.thin_plate import dense_displacement_matrix, pixel_grid, sample, tps_sampling_grid
from dafnet.engine.export import exported_recipe, load_export
from dafnet.experiment.cell_evaluation import evaluation_batches, recipe_subjects
from dafnet.methods.dafnet.alignment import counted_pixels
from dafnet.methods.dafnet.inference import predict_target
from dafnet.metrics.alignment_error import error_maps, error_statistics, sample_coordinates

COLUMNS = ("identity", "aligner", "objective", "masks", "tps_floor")


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def fit_offsets(loss_of_grid, batch: int, size: tuple[int, int], steps: int, grid_size: int = 5) -> torch.Tensor:
    """Per-sample TPS offsets (sampling frame) minimising ``loss_of_grid(grid) -> (B,)`` by Adam from 0."""
    matrix, base = dense_displacement_matrix(*size, grid_size).float(), pixel_grid(*size).float()
    offsets = torch.zeros(batch, grid_size ** 2, 2, requires_grad=True)
    optimiser = torch.optim.Adam([offsets], lr=0.01)
    with torch.enable_grad():
        for step in range(steps):
            if step == int(0.6 * steps):
                optimiser.param_groups[0]["lr"] = 0.002
            optimiser.zero_grad(set_to_none=True)
            loss_of_grid(tps_sampling_grid(offsets, matrix, base)).sum().backward()
            optimiser.step()
    return tps_sampling_grid(offsets.detach(), matrix, base)


def one_hot_foreground(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), classes).permute(0, 3, 1, 2)[:, 1:].float()


def grids(method, batch: dict, m: int, encoded: dict, steps: int) -> dict[str, torch.Tensor]:
    t = method.target_index
    s_m, s_t = encoded["anatomy"][m].float(), encoded["anatomy"][t].float()
    batch_size, _, h, w = s_t.shape
    classes = method.num_classes + 1
    masks_m = blur(one_hot_foreground(batch["masks"][:, m, 0], classes), 2.0)
    masks_t = blur(one_hot_foreground(batch["masks"][:, t, 0], classes), 2.0)
    source, target = batch["coordinates"][:, m, 0].float(), batch["coordinates"][:, t, 0].float()
    counted = counted_pixels(method, batch, m).float()

    def truth_loss(grid):
        sampled, _ = sample_coordinates(source, grid)
        error = torch.sqrt(((sampled - target) ** 2).sum(1) + 1e-6)
        return (error * counted).flatten(1).sum(1) / counted.flatten(1).sum(1).clamp_min(1)

    return {
        "identity": pixel_grid(h, w).float().expand(batch_size, -1, -1, -1),
        "aligner": encoded["alignment"][m].grid.float(),
        "objective": fit_offsets(lambda g: (sample(s_m, g) - s_t).abs().flatten(1).mean(1), batch_size, (h, w), steps),
        "masks": fit_offsets(lambda g: (sample(masks_m, g) - masks_t).abs().flatten(1).mean(1), batch_size, (h, w),
                             steps),
        "tps_floor": fit_offsets(truth_loss, batch_size, (h, w), steps),
    }


@torch.no_grad()
def floors(run: Path, split: str, steps: int) -> dict[str, dict[str, float]]:
    method, recipe = load_export(run), exported_recipe(run)
    ids = json.loads((run / "splits.json").read_text())[split]
    by_id = {str(s.id): s for s in recipe_subjects(recipe, run)[0]}
    _, batches = evaluation_batches(method, [by_id[i] for i in ids], recipe.train.batch_size)
    maps: dict[str, list[torch.Tensor]] = {c: [] for c in COLUMNS}
    reference: list[torch.Tensor] = []
    for batch in batches:
        if "coordinates" not in batch:
            raise SystemExit(f"{run}: its data carry no truth coordinates (the phantom's do)")
        n, t = batch["images"].shape[1], method.target_index
        encoded: dict = {}
        predict_target(method, t, {i: batch["images"][:, i, 0] for i in range(n)},
                       {i: batch["present"][:, i] for i in range(n)}, None, encoded)
        for m in sorted(encoded["alignment"]):
            counted = counted_pixels(method, batch, m)
            coords = batch["coordinates"][:, m, 0], batch["coordinates"][:, t, 0]
            for name, grid in grids(method, batch, m, encoded, steps).items():
                aligned, identity = error_maps(grid, *coords, counted)
                maps[name].append(aligned.flatten())
            reference.append(identity.flatten())
    identity = torch.cat(reference)
    out = {}
    for name in COLUMNS:
        numbers = error_statistics(torch.cat(maps[name]), identity)
        out[name] = {"median_mm": round(numbers["align_median_mm"], 2), "p95_mm": round(numbers["align_p95_mm"], 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--steps", type=int, default=400, help="Adam steps of each per-pair fit")
    args = parser.parse_args()
    for run in args.runs:
        result = floors(run, args.split, args.steps)
        print(json.dumps({"run": str(run), "split": args.split, **result}))


if __name__ == "__main__":
    main()
