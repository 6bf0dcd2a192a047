"""Disk full and interrupted writes: a failed save of the training state or the export exits 2
with the path and how to go on, and leaves no staging folder; staging folders of killed runs are
removed by the next run, those of running processes are kept; a run folder without a state or an
export says what to do. (``dafnet predict``'s side is in test_predict.py.)"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _cli import run_cli
from test_engine import quiet, toy_recipe

from dafnet import fsutil
from dafnet.errors import DafnetError, WriteFailed

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def staged_by(target: Path, pid: int, host: str | None = None) -> Path:
    """A staging folder for ``target`` as process ``pid`` on ``host`` (default: this one) names it."""
    name = fsutil.staging_path(target).name
    stem, _, rest = name.partition(".tmp-")
    token = rest.rsplit("-", 1)[1]
    path = target.parent / f"{stem}.tmp-{host or fsutil._HOST}-{pid}-{token}"
    path.mkdir()
    (path / "half.bin").write_bytes(b"\0" * 10)
    return path


def recipe_file(tmp_path: Path, **kwargs) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(tmp_path, **kwargs).model_dump(mode="json")))
    return path


def fail_save_state_at(monkeypatch, epoch_call: int) -> list[int]:
    """Accelerate's save_state writes part of a file, then the disk is full, on its ``epoch_call``-th call."""
    from accelerate import Accelerator

    original, calls = Accelerator.save_state, []

    def save_state(self, output_dir=None, **kwargs):
        calls.append(1)
        if len(calls) == epoch_call:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(output_dir) / "model.safetensors"))
        return original(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    return calls


def flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- staging names and staleness
def test_staging_entries_of_gone_processes_are_stale_and_live_ones_kept(tmp_path):
    target = tmp_path / "state"
    dead = staged_by(target, dead_pid())
    live = staged_by(target, os.getppid())  # the process that started pytest runs
    elsewhere_new = staged_by(target, 1, host="otherhost")
    elsewhere_old = staged_by(target, 1, host="otherhost2")
    legacy_old = tmp_path / ".state.tmp-0123abcd"
    legacy_old.mkdir()
    day_ago = time.time() - fsutil.STALE_AFTER_S - 60
    for path in (elsewhere_old, legacy_old):
        os.utime(path, (day_ago, day_ago))
    other_target = staged_by(tmp_path / "keep", dead_pid())
    assert fsutil.stale_staging(tmp_path, ["state"]) == sorted([dead, elsewhere_old, legacy_old])
    assert fsutil.remove_stale_staging(tmp_path, ["state"]) == sorted([dead, elsewhere_old, legacy_old])
    assert live.is_dir() and elsewhere_new.is_dir() and other_target.is_dir() and not dead.exists()


def test_a_swap_cut_short_is_put_back_not_removed(tmp_path):
    target = tmp_path / "state"
    old = fsutil.staging_path(target, "old")
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"1")
    assert fsutil.stale_staging(tmp_path, ["state"]) == []  # the only copy
    assert fsutil.restore_interrupted_swap(target)
    assert (target / "model.safetensors").read_bytes() == b"1" and not old.exists()


def test_write_failure_reads_the_errors_of_safetensors_and_torch():
    assert fsutil.write_failure(ENOSPC) == "No space left on device"
    from safetensors import SafetensorError

    said = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                           'message: "No space left on device" })')
    assert fsutil.write_failure(said) == "No space left on device"
    assert fsutil.write_failure(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
    assert fsutil.write_failure(RuntimeError("shapes do not match")) is None
    assert fsutil.write_failure(ValueError("No space left on device")) is None


def test_write_atomically_names_the_path_and_leaves_no_staging_file(tmp_path):
    def fill(tmp):
        tmp.write_text("half")
        raise ENOSPC

    with pytest.raises(WriteFailed, match=f"cannot write {tmp_path / 'log.csv'}: No space left"):
        fsutil.write_atomically(tmp_path / "log.csv", fill)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- training state and export
def test_a_full_disk_while_saving_the_state_exits_2_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    recipe, run = recipe_file(tmp_path, train={"epochs": 2}), tmp_path / "run"
    calls = fail_save_state_at(monkeypatch, 2)
    code, out, err = run_cli(capsys, "train", recipe, "--run-dir", run)
    text = flat(out + err)
    assert code == 2 and len(calls) == 2, text
    assert f"cannot save the training state to {run / 'state'}: No space left on device" in text
    assert f"dafnet train --resume {run}" in text and "Traceback" not in text
    assert not list(run.glob(".state*")) and (run / "state").is_dir()  # epoch 1's state is intact
    monkeypatch.undo()
    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0, out + err
    assert (run / "export" / "dafnet_index.json").is_file()


def test_a_full_disk_while_saving_the_first_state_keeps_nothing(tmp_path, capsys, monkeypatch):
    recipe, run = recipe_file(tmp_path, train={"epochs": 2}), tmp_path / "run"
    fail_save_state_at(monkeypatch, 1)
    code, out, err = run_cli(capsys, "train", recipe, "--run-dir", run)
    text = flat(out + err)
    assert code == 2 and f"cannot save the training state to {run / 'state'}" in text, text
    assert "nothing was kept" in text and "run the same train command again" in text
    assert not run.exists() and not list(tmp_path.glob(".*"))


def test_a_full_disk_while_exporting_exits_2_and_a_resume_only_exports(tmp_path, capsys, monkeypatch):
    from dafnet.engine import export

    recipe, run = recipe_file(tmp_path, train={"epochs": 1}), tmp_path / "run"

    def full(tensors, path, metadata=None):
        Path(path).write_bytes(b"\0" * 10)
        raise ENOSPC

    monkeypatch.setattr(export, "save_safetensors", full)
    code, out, err = run_cli(capsys, "train", recipe, "--run-dir", run)
    text = flat(out + err)
    assert code == 2 and f"cannot write the export to {run / 'export'}: No space left on device" in text, text
    assert f"dafnet train --resume {run}" in text
    assert not (run / "export").exists() and not list(run.glob(".export*")) and (run / "state").is_dir()
    monkeypatch.undo()
    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0, out + err
    assert "was not written: exporting it" in flat(out)
    assert (run / "export" / "dafnet_index.json").is_file() and (run / "summary.json").is_file()
    code, out, err = run_cli(capsys, "train", "--resume", run)  # now finished and exported
    assert code == 2 and "already trained all 1 epochs" in flat(out + err)


def test_a_full_disk_while_writing_the_summary_is_finished_by_a_resume(tmp_path, capsys, monkeypatch):
    from dafnet.engine import rundir

    recipe, run = recipe_file(tmp_path, train={"epochs": 1}), tmp_path / "run"
    real = rundir.write_atomically

    def full_for_the_summary(path, write):
        def half(tmp):
            tmp.write_text("{")
            raise ENOSPC

        return real(path, half if path.name == "summary.json" else write)

    monkeypatch.setattr(rundir, "write_atomically", full_for_the_summary)
    code, out, err = run_cli(capsys, "train", recipe, "--run-dir", run)
    text = flat(out + err)
    assert code == 2 and f"cannot write {run / 'summary.json'}: No space left on device" in text, text
    assert f"dafnet train --resume {run}" in text and not list(run.glob(".*"))
    monkeypatch.undo()
    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0 and "exporting it" in flat(out), out + err
    assert (run / "summary.json").is_file()


def test_a_resume_removes_the_staging_folders_of_killed_saves(tmp_path):
    from dafnet.engine import train

    run = tmp_path / "run"
    train(toy_recipe(tmp_path, train={"epochs": 1}), run_dir=run, console=quiet())
    killed = staged_by(run / "state", dead_pid())
    killed_export = staged_by(run / "export", dead_pid())
    running = staged_by(run / "state", os.getppid())
    train(toy_recipe(tmp_path, train={"epochs": 2}), resume=run, console=quiet())
    assert not killed.exists() and not killed_export.exists()
    assert running.is_dir()


# ---------------------------------------------------------------- run folders without state or export
@pytest.fixture
def stateless_run(tmp_path):
    """A run folder as a run killed during its first epoch leaves it."""
    from dafnet.engine import rundir

    run = tmp_path / "killed"
    run.mkdir()
    (run / "recipe.yaml").write_text(rundir.recipe_yaml(toy_recipe(tmp_path)))
    (run / "metadata.json").write_text("{}")
    staged_by(run / "state", dead_pid())  # killed while saving its first state
    return run


def test_resuming_a_run_without_state_says_to_start_again(stateless_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--resume", stateless_run)
    text = flat(out + err)
    assert code == 2 and f"cannot resume {stateless_run}: it holds no saved state" in text, text
    assert "without --resume" in text and f"rm -r {stateless_run}" in text
    assert not list(stateless_run.glob(".state*"))  # the killed save's folder went
    code, out, err = run_cli(capsys, "train", recipe_file(tmp_path), "--run-dir", stateless_run)
    text = flat(out + err)
    assert code == 2 and "stopped (was it killed?) before its first epoch ended" in text, text
    assert f"rm -r {stateless_run}" in text


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluating_or_predicting_with_a_run_without_state_says_what_to_do(stateless_run, tmp_path, capsys,
                                                                          command):
    args = ["--metric", "dice"] if command == "evaluate" else ["--input", tmp_path, "--out", tmp_path / "o"]
    code, out, err = run_cli(capsys, command, stateless_run, *args)
    text = flat(out + err)
    assert code == 2 and f"run {stateless_run} has no export and no saved state" in text, text
    assert "train it again" in text


def test_a_run_without_export_but_with_state_says_how_to_finish_it(tmp_path):
    from dafnet.engine import train
    from dafnet.engine.export import read_index

    run = tmp_path / "run"
    train(toy_recipe(tmp_path, train={"epochs": 1}), run_dir=run, console=quiet())
    (run / "export" / "dafnet_index.json").unlink()
    with pytest.raises(DafnetError, match="has no export yet") as exc:
        read_index(run)
    assert f"dafnet train --resume {run}" in exc.value.hint
