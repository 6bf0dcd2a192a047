"""Two CPU processes (gloo, Accelerate's debug_launcher) train the toy method: both ranks end
with identical weights, equal to a one-process run on the same global batch.

The toy generator has no BatchNorm: with per-process batch statistics a two-process run is
not the same computation as one process on the global batch (SyncBatchNorm is not used).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import debug_launcher
from test_engine import ToyMethod, exported, quiet, toy_recipe

SPLIT = {"folds": 1, "train": 0.8, "validation": 0.0, "test": 0.2}
SOURCE = {"subjects": 10, "slices": 2}  # 8 training subjects: 8 paired + 8 unpaired samples
TRAIN = {"epochs": 2, "swa_start": 2}


def _two_process_run(out_dir: str) -> None:
    from accelerate.state import AcceleratorState, GradientState

    from dafnet.engine import train

    # a forked child inherits the parent's one-process Accelerate state (earlier tests): drop it
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()

    ToyMethod.snapshots.clear()
    recipe = toy_recipe(Path(out_dir), split=SPLIT, source=SOURCE, train={**TRAIN, "batch_size": 2})
    result = train(recipe, run_dir=Path(out_dir) / "ddp", console=quiet())
    from accelerate import PartialState

    rank = PartialState().process_index
    torch.save({"final": ToyMethod.snapshots[-1], "summary": result.summary},
               Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_match_each_other_and_one_big_batch(tmp_path):
    debug_launcher(_two_process_run, args=(str(tmp_path),), num_processes=2)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for role in r0["final"]:
        for key in r0["final"][role]:
            assert torch.equal(r0["final"][role][key], r1["final"][role][key]), (role, key)
    assert r0["summary"] == r1["summary"]

    from dafnet.engine import train

    single = train(toy_recipe(tmp_path, split=SPLIT, source=SOURCE, train={**TRAIN, "batch_size": 4}),
                   run_dir=tmp_path / "single", console=quiet())
    one, two = exported(single.run_dir), exported(tmp_path / "ddp")
    for role in one:
        for key in one[role]:
            torch.testing.assert_close(two[role][key], r0["final"][role][key])
            torch.testing.assert_close(one[role][key], two[role][key], rtol=1e-5, atol=1e-6)
    assert single.summary["monitor"] == pytest.approx(r0["summary"]["monitor"], rel=1e-5)
