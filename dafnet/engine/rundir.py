"""The run directory: layout, the resolved recipe, run metadata and the subject splits.

::

    <run>/recipe.yaml      the resolved recipe (every default filled in)
    <run>/metadata.json    versions, plugins in use, seed, git SHA, processes, device
    <run>/splits.json      the fold, its split settings and the subject ids of train / validation / test
    <run>/plans.json       the planned in-plane spacing, when the data source's spacing_mm is auto
    <run>/log.csv          one row per epoch: phase losses, validation numbers
    <run>/tensorboard/     TensorBoard event files (Accelerate tracker)
    <run>/state/           resume state (Accelerate save_state + engine state)
    <run>/export/          dafnet_index.json + <role>.safetensors
    <run>/figures/         loss_curves.png
    <run>/summary.json     the final evaluation numbers
    <run>/failed.json      only when a training health check stopped the run: which, when, why
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from dafnet.config.schema import Recipe
from dafnet.data.splits import splits_record
from dafnet.errors import DafnetError
from dafnet.fsutil import check_output_folder, write_atomically
from dafnet.registry import registry

RECIPE_FILE = "recipe.yaml"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE_FILE

    @property
    def metadata(self) -> Path:
        return self.root / "metadata.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans.json"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def failed(self) -> Path:
        return self.root / "failed.json"


def default_run_name(recipe: Recipe) -> str:
    if recipe.output.name:
        return recipe.output.name
    return f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def choose_run_dir(recipe: Recipe, run_dir: str | Path | None, resume: str | Path | None) -> Path:
    """The run directory, checked: a resumed run must hold state (what killed runs left in it is
    tidied first: :func:`dafnet.engine.leftovers.tidy_run_folder`), a new one must be empty."""
    if resume is not None:
        from dafnet.engine.leftovers import no_state_error, tidy_run_folder

        root = Path(resume)
        tidy_run_folder(root)
        if not (root / "state").is_dir():
            raise no_state_error(root)
        return root
    root = Path(run_dir) if run_dir is not None else Path(recipe.output.root) / default_run_name(recipe)
    check_output_folder(root, "--run-dir" if run_dir is not None else "run directory (output.root / output.name)")
    if root.exists() and any(root.iterdir()):
        if (root / RECIPE_FILE).is_file() and not (root / "state").is_dir():
            raise DafnetError(f"run directory {root} already holds a run, one that stopped (was it killed?) before "
                              "its first epoch ended, so there is nothing in it to continue",
                              hint=f"remove it (rm -r {root}) and train again, or choose another --run-dir or "
                                   "output.name")
        raise DafnetError(f"run directory {root} already exists and is not empty",
                          hint=f"choose another --run-dir or output.name, or continue it with --resume {root}")
    return root


def recipe_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def read_run_recipe(root: str | Path, overrides: list[str] | None = None) -> Recipe:
    """The resolved recipe of a run (its ``recipe.yaml``), with optional dotted ``overrides``."""
    from dafnet.config.resolve import load_recipe

    path = Path(root) / RECIPE_FILE
    if not Path(root).is_dir():
        raise DafnetError(f"{root} is not a dafnet run directory: " +
                          ("it does not exist" if not Path(root).exists() else "it is a file"),
                          hint="give the folder `dafnet train` wrote (its --run-dir)")
    if not path.is_file():
        raise DafnetError(f"{root} is not a dafnet run directory (no {RECIPE_FILE})")
    return load_recipe(path, overrides or [])


def components_in_use(recipe: Recipe) -> list[dict]:
    """Kind, name, target and origin of the data source, the method and every role's component."""
    items = [("data_source", "data.source", recipe.data.source.name),
             ("method", "method", recipe.method.name)]
    method_cls = registry("method").get(recipe.method.name)
    for role, spec in recipe.model.items():
        kind = method_cls.roles[role].kind if role in method_cls.roles else "?"
        items.append((kind, f"model.{role}", spec.name))
    out = []
    for kind, where, name in items:
        entry = registry(kind).entry(name) if kind != "?" else None
        dist_version = None
        if entry is not None and entry.distribution:
            from importlib import metadata
            try:
                dist_version = metadata.version(entry.distribution)
            except metadata.PackageNotFoundError:
                pass
        out.append({"kind": kind, "where": where, "name": name,
                    "target": entry.target if entry else None,
                    "origin": entry.origin if entry else None,
                    "distribution": entry.distribution if entry else None,
                    "version": dist_version})
    return out


def git_sha() -> dict | None:
    """The commit of the dafnet source tree, if it is a git checkout."""
    import dafnet

    where = Path(dafnet.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"sha": sha, "dirty": bool(dirty)}


def run_metadata(recipe: Recipe, accelerator) -> dict:
    import accelerate
    import torch

    import dafnet

    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "accelerate": accelerate.__version__, "dafnet": dafnet.__version__},
        "plugins": [c for c in components_in_use(recipe) if c["distribution"]],
        "components": components_in_use(recipe),
        "seed": recipe.train.seed,
        "git": git_sha(),
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "host": platform.node(),
    }


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temp file + rename); a failed write is a :class:`WriteFailed`."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_run_files(paths: RunPaths, recipe: Recipe, accelerator, splits: dict[str, list],
                    plans: dict | None = None) -> None:
    """recipe.yaml, metadata.json, splits.json and, for ``spacing_mm: auto``, plans.json (main
    process only)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.recipe.write_text(recipe_yaml(recipe), encoding="utf-8")
    write_json(paths.metadata, run_metadata(recipe, accelerator))
    write_json(paths.splits, splits_record(recipe.data.split, splits))
    if plans is not None:
        write_json(paths.plans, plans)


def read_plans(paths: RunPaths) -> dict | None:
    """A run's plans.json (None when it has none)."""
    if not paths.plans.is_file():
        return None
    try:
        return json.loads(paths.plans.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DafnetError(f"{paths.plans} is damaged: {exc}",
                          hint="restore it from a copy of the run; it holds the planned spacing") from exc
