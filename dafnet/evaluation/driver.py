"""The ``dafnet evaluate`` call (:func:`evaluate`; the package docstring says what it does): the
export loaded, the data and the metrics prepared, every metric fed the evaluation inputs it wants
subject by subject, the files written to a staging folder that replaces the output folder."""

from __future__ import annotations

import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dafnet.errors import DafnetError
from dafnet.evaluation.data import check_facts, recipe_with_data, run_root, split_subjects, volume_geometry
from dafnet.evaluation.folders import check_target, evaluation_folder_name, moved
from dafnet.evaluation.metric_setup import build_metrics, metric_params
from dafnet.evaluation.results import merge_rows, write_csv, write_json
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


def evaluate(export: str | Path, metrics: list[str], *, data: str | None = None, split: str = "test",
             out_dir: str | Path | None = None, pairing: str | None = None, batch_size: int | None = None,
             device: str | None = None, progress=None,
             overrides: list[str] | tuple[str, ...] = (), metric_options: list[str] | tuple[str, ...] = (),
             overwrite: bool = False) -> EvaluationResult:
    """Evaluate an export with the named metrics; see the package docstring. ``metric_options``
    set metric parameters as ``NAME.KEY=VALUE`` (``dcor.max_samples=2000``). ``out_dir``: the
    output folder (default ``<run>/evaluation/<evaluation_folder_name(...)>``); an existing
    non-empty one is an error unless ``overwrite``, which replaces it whole."""
    from dafnet.engine.export import facts_from_json, read_index

    if split not in SPLITS:
        raise DafnetError(f"unknown split {split!r}", hint=f"one of {', '.join(SPLITS)}")
    export = Path(export)
    if not export.exists():
        raise DafnetError(f"no export at {export}: the path does not exist",
                          hint="give a run folder or its export/ folder written by `dafnet train`")
    index = read_index(export)
    root = run_root(export)
    names = list(dict.fromkeys(metrics))
    if out_dir is None:
        out = root / "evaluation" / evaluation_folder_name(names, split, overrides, metric_options, data, pairing)
    else:
        out = Path(out_dir)
    check_output_folder(out, "--out" if out_dir is not None else "the evaluation folder")
    check_target(out, overwrite, out_dir is None)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    method, recipe, other_data, planned_where = _load_method(export, device, overrides, data, pairing)
    exported_facts = facts_from_json(index["facts"])
    metric_objects = build_metrics(names, exported_facts, metric_params(list(metric_options), names))
    chosen, split_source = _chosen_subjects(recipe, exported_facts, root, not other_data, split,
                                            (index.get("plans"), planned_where))
    call = _Call(method, metric_objects, chosen, batch_size or recipe.train.batch_size, device, progress)
    source = {"export": str(export), "split": split, "splits_from": split_source}
    options = {"device": str(device), "pairing": getattr(method.params, "pairing", None), "data": data,
               "overrides": list(overrides)}
    return _write(call, out, overwrite, out_dir is None, split, (source, options), index.get("weights"))


def _load_method(export: Path, device, overrides, data: str | None, pairing: str | None):
    """(the exported method on ``device``, its recipe with the overrides and ``data``, whether the
    data are another than the run's, ``"export <path>"`` when the exported recipe plans its spacing
    (``spacing_mm: auto``, so the export must store it) else None); ``pairing`` set on the method's params."""
    from dafnet.engine.export import exported_recipe, load_export

    method = load_export(export, device=device, overrides=overrides)
    exported = exported_recipe(export, overrides)  # the stored recipe, overridden
    recipe, other_data = recipe_with_data(exported, data)
    if pairing is not None:
        if "pairing" not in type(method.params).model_fields:
            raise DafnetError(f"--pairing: method {recipe.method.name!r} has no pairing option")
        method.params = method.params.model_copy(update={"pairing": pairing})
    exported_auto = exported.data.source.params.get("spacing_mm") == "auto"
    return method, recipe, other_data, f"export {export}" if exported_auto else None


def _chosen_subjects(recipe, exported_facts, root: Path, use_run_splits: bool, split: str,
                     plans: tuple[dict | None, str | None]) -> tuple[list, str]:
    """The subjects of ``split`` (data checked against the exported model, loaded at the export's
    planned spacing: ``plans`` is the index's record and where it must come from) and where the
    split came from."""
    from dafnet.assemble import build_data_source
    from dafnet.data.plans import plan_data

    source, facts = build_data_source(recipe)
    check_facts(exported_facts, facts)
    stored, where = plans
    plan_data(source, recipe.data, stored, where=where)
    try:
        subjects = source.load()
    except FileNotFoundError as exc:
        raise DafnetError(f"data not found: {exc}", hint="pass --data with the dataset folder or a recipe") from exc
    chosen, split_source = split_subjects(recipe, subjects, root, use_run_splits, split)
    if not chosen:
        raise DafnetError(f"the {split} split is empty", hint="choose --split validation or --split all")
    return chosen, split_source


@dataclass
class _Call:
    """What feeding the metrics needs."""

    method: object
    metrics: dict
    subjects: list
    batch_size: int
    device: torch.device
    progress: object


def _write(call: _Call, out: Path, overwrite: bool, named: bool, split: str, described: tuple[dict, dict],
           weights) -> EvaluationResult:
    """Run the metrics into a staging folder beside ``out`` that replaces it at the end; on any
    error the staging folder and the parents made for ``out`` go. ``described``: what metrics.json's
    ``info`` says of the call before and after the numbers of the run."""
    source, options = described
    created = missing_parents(out, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        for metric in call.metrics.values():
            metric.attach(call.method)
            metric.output_dir = staging
        evaluated, slices, seconds = _feed(call.method, call.metrics, call.subjects, call.batch_size,
                                           call.device, call.progress)
        if not evaluated:
            raise DafnetError(f"no subject of the {split} split has the target modality")

        results = {name: metric.compute() for name, metric in call.metrics.items()}
        info = {**source, "subjects": evaluated, "samples": slices, "seconds": seconds,
                "samples_per_second": slices / seconds if seconds else math.nan, **options,
                "metric_params": {name: m.params.model_dump(mode="json") for name, m in call.metrics.items()
                                  if m.params is not None}, "weights": weights}
        per_volume = merge_rows(results)
        files = [moved(f, staging, out) for r in results.values() for f in r.files]
        summaries = {name: r.summary for name, r in results.items()}
        info["notes"] = {name: list(r.notes) for name, r in results.items() if r.notes}
        write_json(staging / "metrics.json", {"info": info, "metrics": summaries, "files": files})
        write_csv(staging / "per_volume.csv", per_volume)
        check_target(out, overwrite, named)  # another call may have written it meanwhile
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


__all__ = ["SPLITS", "EvaluationResult", "evaluate"]
