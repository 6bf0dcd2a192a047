"""The files of one evaluation: ``metrics.json`` (NaN written as null) and ``per_volume.csv`` (the
metrics' per-case rows merged by case)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path


def merge_rows(results) -> list[dict]:
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


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(_clean(data), indent=2, default=str) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns or ["case"], restval="")
        writer.writeheader()
        writer.writerows(rows)


__all__ = ["merge_rows", "write_csv", "write_json"]
