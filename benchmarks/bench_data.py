"""Data throughput: slices per second prepared from NIfTI (cold) and loaded for training (cached).

The phantom (cine + LGE) is written to disk in the nnU-Net raw layout at each size, then:

* **prepared (cold)**: a fresh ``nnunet`` data source ``load()``: NIfTI decode (gzip), NaN
  check, orientation, constant-slice trim, per-slice percentile clipping and rescale, and the
  in-plane transform (the files' own spacing, so scale 1, with the crop/pad interpolation pass),
  i.e. the training preprocessing with the default params.
  Slices per second count every slice of every sequence.
* **loaded (cached)**: the prepared subjects through the training ``DataLoader`` (DAFNet's
  ``PairedSliceDataset``, expert pairing, +-20 degree rotation of every sample, batch 6,
  ``num_workers`` 0): samples per second, one target slice + its paired slice each.

    python benchmarks/bench_data.py [--sizes 64 192 --subjects 8 --slices 10 --repeats 3]

Prints a markdown table and writes ``benchmarks/results/data.json``. Each number is the best
of ``--repeats`` runs (the JSON keeps all of them and the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path


def prepare(root: Path, size: int) -> tuple[float, int, list]:
    from dafnet.data.nnunet import NnUNetDataSource

    source = NnUNetDataSource(NnUNetDataSource.Params(root=str(root), image_size=size))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subjects = source.load()
    seconds = time.perf_counter() - start
    return seconds, sum(v.num_slices for s in subjects for v in s.volumes.values()), subjects


def load(subjects, epochs: int = 2) -> tuple[float, int]:
    import torch
    from torch.utils.data import DataLoader, default_collate

    from dafnet.data.slices import PairedSliceDataset, SampleConfig

    dataset = PairedSliceDataset(subjects, SampleConfig(("cine", "lge"), "lge", rotation_degrees=20.0),
                                 training=True)
    loader = DataLoader(dataset, batch_size=6, shuffle=True, collate_fn=default_collate,
                        generator=torch.Generator().manual_seed(0))
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += batch["images"].shape[0]
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 192])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data.json")
    args = parser.parse_args()

    import torch

    from dafnet.data.phantom import PhantomDataSource, write_phantom

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            params = PhantomDataSource.Params(subjects=args.subjects, slices=args.slices, image_size=size)
            root = write_phantom(Path(tmp) / f"phantom{size}", params)
            disk = sum(f.stat().st_size for f in root.rglob("*.nii.gz"))
            cold, warm = [], []
            for _ in range(args.repeats):
                seconds, slices, subjects = prepare(root, size)
                cold.append(slices / seconds)
                seconds, samples = load(subjects)
                warm.append(samples / seconds)
            rows.append({"size": size, "subjects": args.subjects, "slices_per_volume": args.slices,
                         "slices_prepared": slices, "nifti_mb": round(disk / 2**20, 2),
                         "prepared_slices_per_s": max(cold), "loaded_samples_per_s": max(warm),
                         "prepared_repeats": cold, "loaded_repeats": warm})
    print("| size | slices | prepared (cold) slices/s | loaded (cached) samples/s |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['slices_prepared']} | {r['prepared_slices_per_s']:,.0f} | "
              f"{r['loaded_samples_per_s']:,.0f} |")
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
           "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "data", "environment": env, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
