"""Resume state, separate from the export: ``<run>/state/``.

Accelerate's ``save_state`` writes the prepared networks, the optimizers, every process's RNG
states (python, numpy, torch, cuda) and the engine objects registered with
``register_for_checkpointing``: training progress (epoch, step, history), early stopping,
the best epoch's weights and the SWA averages. It is written at the end of every epoch to a
temporary folder (``.state.tmp-<host>-<pid>-<token>``) that then replaces ``state/``, so a crash
never leaves half a state; a save that fails (disk full) removes its folder and leaves the last
state as it was. ``load_state`` restores all of it and the next epoch continues exactly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dafnet.fsutil import raise_write_failed, replace_directory, staging_path


@dataclass
class TrainProgress:
    """Where training stands; checkpointed with the rest of the state."""

    epochs_done: int = 0
    global_step: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "global_step": self.global_step,
                "stopped_early": self.stopped_early, "history": [dict(r) for r in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done = int(state["epochs_done"])
        self.global_step = int(state["global_step"])
        self.stopped_early = bool(state["stopped_early"])
        self.history = [dict(r) for r in state["history"]]


RECIPE_FILE = "recipe.yaml"
"""The resolved recipe the state was saved under, kept with it: a resume is checked against it."""


def save_checkpoint(accelerator, state_dir: Path, recipe_text: str | None = None) -> None:
    """Every process calls this (each saves its own RNG state); ``recipe_text`` is stored beside it.
    A write that fails (disk full, permission) is a :class:`WriteFailed` naming ``state_dir``."""
    from accelerate.utils import broadcast_object_list

    state_dir = Path(state_dir)
    name = [staging_path(state_dir).name if accelerator.is_main_process else None]  # the main process's pid
    name = broadcast_object_list(name) if accelerator.num_processes > 1 else name
    tmp = state_dir.parent / name[0]
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if recipe_text is not None:
                (tmp / RECIPE_FILE).write_text(recipe_text, encoding="utf-8")
            replace_directory(tmp, state_dir)
        accelerator.wait_for_everyone()
    except BaseException as exc:  # noqa: BLE001 (raise_write_failed re-raises it)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise_write_failed(exc, f"save the training state to {state_dir}", state_dir)


def load_checkpoint(accelerator, state_dir: Path) -> None:
    """Restore a state; a damaged one (cut or partly copied files) is a clear error."""
    from dafnet.errors import DafnetError

    try:
        accelerator.load_state(str(state_dir))
    except Exception as exc:  # safetensors, pickle and torch raise their own types
        raise DafnetError(f"the resume state in {state_dir} cannot be read: {type(exc).__name__}: {exc}",
                          hint="it is rewritten whole at the end of every epoch, so a damaged copy cannot be "
                               "resumed: copy the run again from where it trained, or start a new run") from exc


def saved_recipe_path(state_dir: Path) -> Path | None:
    """The recipe stored with the state (None for states written before it was kept)."""
    path = Path(state_dir) / RECIPE_FILE
    return path if path.is_file() else None
