"""``dafnet evaluate``: an exported model, its data split and a list of metrics -> numbers and figures.

:func:`evaluate` loads the export (a run folder or its ``export/``; ``overrides`` such as
``model.fuser.name=mean`` change its recipe first, to evaluate the same weights with another
fuser), rebuilds the data source from the export's recipe (or another recipe's ``data`` section,
or the recipe's source with another dataset folder), takes the run's ``splits.json`` when there
is one (else recomputes ``split_subjects`` with the recipe's split config), runs the method in
eval mode over the chosen split one subject at a time and feeds every metric the method's
:meth:`~dafnet.interfaces.Method.evaluation_inputs`. It writes ``metrics.json``,
``per_volume.csv`` and the metrics' figures to the output folder: by default its own folder under
``<run>/evaluation/``, named from the call (:func:`evaluation_folder_name`), so calls with other
metrics or overrides never mix. An existing non-empty folder is refused unless ``overwrite``;
everything is written to a staging folder beside it that replaces it only at the end, so an
error leaves nothing half-written and an overwrite leaves no stale figure.

The metric hooks the driver uses are declared, with their defaults, on
:class:`~dafnet.interfaces.Metric`: ``wants(inputs)`` (from ``required_inputs``: a metric is fed
only the inputs that have the fields it needs), ``attach(method)`` (called once before the first
update, e.g. to reach the decoder) and ``output_dir`` (set before the first update: the folder
its figures go to).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dafnet.errors import DafnetError
from dafnet.fsutil import check_output_folder, missing_parents, replace_directory

SPLITS = ("test", "validation", "all")


@dataclass
class EvaluationResult:
    out_dir: Path
    metrics: dict[str, dict[str, float]]
    """metric name -> its summary."""
    per_volume: list[dict]
    files: list[str]
    info: dict = field(default_factory=dict)


def _run_root(path: Path) -> Path:
    """The run folder of an export path (the export folder's parent when it is ``export/``)."""
    path = path.parent if path.is_file() else path
    return path.parent if (path / "dafnet_index.json").is_file() and path.name == "export" else path


def _recipe_with_data(recipe, data: str | None):
    """The export's recipe, with the data section of another recipe or another dataset folder."""
    if data is None:
        return recipe, False
    folder = Path(data).expanduser()
    if folder.is_dir():
        params = dict(recipe.data.source.params)
        if "root" not in params:
            raise DafnetError(f"--data {data}: the export's data source {recipe.data.source.name!r} does not "
                              "read a dataset folder", hint="give a recipe whose data section reads your data")
        params["root"] = str(folder)
        source = recipe.data.source.model_copy(update={"params": params})
        return recipe.model_copy(update={"data": recipe.data.model_copy(update={"source": source})}), True
    from dafnet.config import find_recipe, load_recipe

    try:
        other = load_recipe(find_recipe(data))
    except DafnetError as exc:
        raise DafnetError(f"--data {data}: neither a dataset folder nor a recipe ({exc.message})",
                          hint="give a dataset folder for the export's data source or a recipe YAML") from exc
    return recipe.model_copy(update={"data": other.data}), True


def _check_facts(exported, facts) -> None:
    problems = []
    for name in ("image_size", "num_classes"):
        if getattr(exported, name) is not None and tuple(np.atleast_1d(getattr(exported, name))) != \
                tuple(np.atleast_1d(getattr(facts, name))):
            problems.append(f"{name} {getattr(facts, name)} (the model: {getattr(exported, name)})")
    missing = [m for m in exported.modalities or () if m not in (facts.modalities or ())]
    if missing:
        problems.append(f"no modalities {missing}")
    if problems:
        raise DafnetError("the data do not fit the exported model: " + "; ".join(problems),
                          hint="evaluate on data prepared like the training data")


def _split_subjects(recipe, subjects, run_root: Path, use_run_splits: bool, split: str) -> tuple[list, str]:
    from dafnet.data.splits import split_data

    by_id = {s.id: s for s in subjects}
    if split == "all":
        return list(subjects), "all subjects"
    path = run_root / "splits.json"
    if use_run_splits and path.is_file():
        ids = json.loads(path.read_text(encoding="utf-8")).get(split, [])
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DafnetError(f"{path} names subjects the data do not have: {missing[:5]}",
                              hint="evaluate on the data the run was trained on, or use --split all")
        source = str(path)
    else:
        ids = [str(i) for i in split_data(subjects, recipe.data)[split]]
        source = f"split_subjects (fold {recipe.data.split.fold}, seed {recipe.data.split.seed})"
    return [by_id[i] for i in ids], source


def volume_geometry(volume) -> tuple[tuple[float, float], float | None]:
    """((row, col) spacing in mm from the affine, slice spacing in mm or None when irregular)."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    spacing = (float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 2])))
    spacing = tuple(s if s > 0 else 1.0 for s in spacing)
    steps = np.abs(np.diff(np.asarray(volume.slice_positions, dtype=np.float64)))
    if steps.size == 0 or steps.min() <= 0 or steps.max() - steps.min() > 1e-3 * steps.max():
        return spacing, None
    return spacing, float(steps.mean())


def metric_params(items: list[str], names: list[str]) -> dict[str, dict]:
    """``NAME.KEY=VALUE`` items (``dcor.max_samples=2000``; values parsed as YAML) -> params per metric."""
    from dafnet.config.loading import parse_value

    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, field = key.strip().rpartition(".")
        if not sep or not dot or not name or not field:
            raise DafnetError(f"--metric-param {item!r} is not NAME.KEY=VALUE",
                              hint="e.g. --metric-param dcor.max_samples=2000")
        if name not in names:
            raise DafnetError(f"--metric-param {item!r}: {name!r} is not one of the --metric names {names}",
                              hint=f"add --metric {name}")
        out.setdefault(name, {})[field] = parse_value(raw)
    return out


def build_metrics(names: list[str], facts, params: dict[str, dict] | None = None) -> dict[str, object]:
    """The metrics ``names``, each built with its ``params`` (see :func:`metric_params`)."""
    from dafnet.builder import build, component_class, validate_params
    from dafnet.registry import registry

    if not names:
        installed = ", ".join(registry("metric").names())
        raise DafnetError("no metric given", hint=f"add --metric NAME; installed: {installed}")
    out = {}
    for name in names:
        reg = registry("metric")
        if name not in reg:
            raise DafnetError(reg.unknown_message(name), hint=reg.unknown_hint(name))
        cls = component_class("metric", name, f"--metric {name}")
        validated = validate_params(cls, (params or {}).get(name, {}), f"--metric-param {name}", name)
        out[name] = build("metric", name, validated, facts, f"--metric {name}")
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]+")
_DROPPED = re.compile(r"[\s\[\](){}'\"]+")
_PART_CHARS = 48
"""Longest part of a folder name kept as it is; a longer one is cut and ends with a hash."""


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _name_part(text: str) -> str:
    """``text`` made safe for a folder name: kept when it is short and has only letters, digits
    and ``._=+,-``; otherwise its safe characters (spaces, brackets and quotes dropped, others as
    ``-``, cut to 40) and a hash of ``text``, so two texts never share a name."""
    safe = _UNSAFE.sub("-", _DROPPED.sub("", text)).strip("-.") or "x"
    if safe == text and len(text) <= _PART_CHARS:
        return text
    return f"{safe[:_PART_CHARS - 8].rstrip('-.')}-{_digest(text)}"


def evaluation_folder_name(metrics, split: str = "test", overrides=(), metric_options=(), data: str | None = None,
                           pairing: str | None = None) -> str:
    """The folder under ``<run>/evaluation/`` of one ``dafnet evaluate`` call, e.g.
    ``test__dice+alignment__model.fuser.name=mean``: the parts split, metrics (in the order given,
    joined by ``+``), then only when given: metric parameters, overrides (each joined by ``+``),
    ``data=<name>-<hash of its path>`` and ``pairing=<pairing>``, joined by ``__``. Each part is
    made filesystem-safe by :func:`_name_part` (long or unusual parts end with a hash)."""
    parts = [_name_part(split), "+".join(_name_part(m) for m in dict.fromkeys(metrics))]
    for items in (metric_options, overrides):
        if items:
            parts.append("+".join(_name_part(str(item).strip()) for item in items))
    if data is not None:
        path = Path(data).expanduser()
        path = path.resolve() if path.exists() else path
        label = _UNSAFE.sub("-", path.stem if path.suffix in (".yaml", ".yml") else path.name).strip("-.")
        parts.append(f"data={label[:24] or 'data'}-{_digest(str(path))}")
    if pairing is not None:
        parts.append(f"pairing={_name_part(pairing)}")
    name = "__".join(parts)
    return name if len(name) <= 160 else f"{name[:150].rstrip('-._+=')}-{_digest(name)}"


def _check_target(out: Path, overwrite: bool, named: bool) -> None:
    """Refuse ``out`` when it holds anything, unless ``overwrite`` and it is an evaluation folder
    (has ``metrics.json`` and no evaluations in folders below it), so ``--overwrite`` never
    deletes a run or a folder of evaluations. ``named``: ``out`` is the default folder of the call."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        why = " (an earlier evaluation with the same split, metrics and overrides wrote it)" if named else ""
        raise DafnetError(f"the evaluation folder {out} exists and is not empty{why}",
                          hint="pass --overwrite to replace it, or --out FOLDER to write elsewhere")
    nested = [p for p in out.iterdir() if p.is_dir() and (p / "metrics.json").is_file()]
    if not (out / "metrics.json").is_file() or nested:
        what = f"holds other evaluations ({nested[0].name}, ...)" if nested else "has no metrics.json"
        raise DafnetError(f"{out} {what}: it is not one evaluation's folder, so --overwrite does not replace it",
                          hint="give --out a new folder or an earlier evaluation's folder")


def evaluate(export: str | Path, metrics: list[str], *, data: str | None = None, split: str = "test",
             out_dir: str | Path | None = None, pairing: str | None = None, batch_size: int | None = None,
             device: str | None = None, progress=None,
             overrides: list[str] | tuple[str, ...] = (), metric_options: list[str] | tuple[str, ...] = (),
             overwrite: bool = False) -> EvaluationResult:
    """Evaluate an export with the named metrics; see the module docstring. ``metric_options``
    set metric parameters as ``NAME.KEY=VALUE`` (``dcor.max_samples=2000``). ``out_dir``: the
    output folder (default ``<run>/evaluation/<evaluation_folder_name(...)>``); an existing
    non-empty one is an error unless ``overwrite``, which replaces it whole."""
    from dafnet.assemble import build_data_source
    from dafnet.engine.export import exported_recipe, facts_from_json, load_export, read_index

    if split not in SPLITS:
        raise DafnetError(f"unknown split {split!r}", hint=f"one of {', '.join(SPLITS)}")
    export = Path(export)
    if not export.exists():
        raise DafnetError(f"no export at {export}: the path does not exist",
                          hint="give a run folder or its export/ folder written by `dafnet train`")
    index = read_index(export)
    root = _run_root(export)
    names = list(dict.fromkeys(metrics))
    if out_dir is None:
        out = root / "evaluation" / evaluation_folder_name(names, split, overrides, metric_options, data, pairing)
    else:
        out = Path(out_dir)
    check_output_folder(out, "--out" if out_dir is not None else "the evaluation folder")
    _check_target(out, overwrite, out_dir is None)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    method = load_export(export, device=device, overrides=overrides)
    exported_facts = facts_from_json(index["facts"])
    recipe, other_data = _recipe_with_data(exported_recipe(export, overrides), data)  # the stored recipe, overridden
    if pairing is not None:
        if "pairing" not in type(method.params).model_fields:
            raise DafnetError(f"--pairing: method {recipe.method.name!r} has no pairing option")
        method.params = method.params.model_copy(update={"pairing": pairing})
    metric_objects = build_metrics(names, exported_facts, metric_params(list(metric_options), names))

    source, facts = build_data_source(recipe)
    _check_facts(exported_facts, facts)
    try:
        subjects = source.load()
    except FileNotFoundError as exc:
        raise DafnetError(f"data not found: {exc}", hint="pass --data with the dataset folder or a recipe") from exc
    chosen, split_source = _split_subjects(recipe, subjects, root, not other_data, split)
    if not chosen:
        raise DafnetError(f"the {split} split is empty", hint="choose --split validation or --split all")
    created = missing_parents(out, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        for metric in metric_objects.values():
            metric.attach(method)
            metric.output_dir = staging
        evaluated, slices, seconds = _feed(method, metric_objects, chosen, batch_size or recipe.train.batch_size,
                                           device, progress)
        if not evaluated:
            raise DafnetError(f"no subject of the {split} split has the target modality")

        results = {name: metric.compute() for name, metric in metric_objects.items()}
        info = {"export": str(export), "split": split, "splits_from": split_source, "subjects": evaluated,
                "samples": slices, "seconds": seconds,
                "samples_per_second": slices / seconds if seconds else math.nan,
                "device": str(device), "pairing": getattr(method.params, "pairing", None),
                "data": data, "overrides": list(overrides),
                "metric_params": {name: m.params.model_dump(mode="json") for name, m in metric_objects.items()
                                  if m.params is not None}, "weights": index.get("weights")}
        per_volume = _merge_rows(results)
        files = [_moved(f, staging, out) for r in results.values() for f in r.files]
        summaries = {name: r.summary for name, r in results.items()}
        info["notes"] = {name: list(r.notes) for name, r in results.items() if r.notes}
        _write_json(staging / "metrics.json", {"info": info, "metrics": summaries, "files": files})
        _write_csv(staging / "per_volume.csv", per_volume)
        _check_target(out, overwrite, out_dir is None)  # another call may have written it meanwhile
        replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):  # the folders made for it, when they stayed empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return EvaluationResult(out, summaries, per_volume, files + [str(out / "metrics.json"),
                                                                 str(out / "per_volume.csv")], info)


def _feed(method, metric_objects: dict, chosen: list, batch_size: int, device, progress) -> tuple[list, int, float]:
    """Every metric fed the evaluation inputs it needs, one subject at a time:
    (the subjects evaluated, the samples, the seconds it took)."""
    from torch.utils.data import DataLoader

    slices, evaluated, started = 0, [], time.perf_counter()
    method.eval()
    with torch.no_grad():
        for subject in chosen:
            dataset = method.eval_dataset([subject])
            if len(dataset) == 0:
                continue
            target = getattr(method, "target", None)
            volume = subject.volumes.get(target) or next(iter(subject.volumes.values()))
            spacing, slice_spacing = volume_geometry(volume)
            evaluated.append(subject.id)
            for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=method.collate):
                batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                size = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
                batch.update(case_ids=[subject.id] * size, spacing=spacing, slice_spacing=slice_spacing)
                for inputs in method.evaluation_inputs(batch):
                    for metric in metric_objects.values():
                        if metric.wants(inputs):
                            metric.update(inputs)
                slices += size
                if progress is not None:
                    progress(subject.id, slices)
    return evaluated, slices, time.perf_counter() - started


def _moved(file, staging: Path, out: Path) -> str:
    """A metric's file written under ``staging``, as its path once ``staging`` became ``out``."""
    try:
        return str(out / Path(file).relative_to(staging))
    except ValueError:
        return str(file)


def _merge_rows(results) -> list[dict]:
    rows: dict[str, dict] = {}
    for result in results.values():
        for row in result.per_case:
            rows.setdefault(str(row.get("case")), {"case": str(row.get("case"))}).update(row)
    return list(rows.values())


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(_clean(data), indent=2, default=str) + "\n", encoding="utf-8")


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns or ["case"], restval="")
        writer.writeheader()
        writer.writerows(rows)


__all__ = ["EvaluationResult", "SPLITS", "build_metrics", "evaluate", "evaluation_folder_name", "metric_params",
           "volume_geometry"]
