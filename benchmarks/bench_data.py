"""Data throughput: slices per second prepared from NIfTI (cold) and loaded for training (cached).

The phantom (cine + LGE) is written to disk in the nnU-Net raw layout at each size, then:

* **prepared (cold)**: a fresh ``nnunet`` data source ``load()``: NIfTI decode (gzip), NaN
  check, orientation, constant-slice trim, per-slice percentile clipping and rescale, and the
  in-plane transform (the files' own spacing, so scale 1, with the crop/pad interpolation pass),
  i.e. the training preprocessing with the default params.
  Slices per second count every slice of every sequence.
* **loaded (cached)**: the prepared subjects through the training ``DataLoader`` (DAFNet's
  ``PairedSliceDataset``, expert pairing, +-20 degree rotation of every sample, batch 6,
  ``num_workers`` 0): samples per second, one target slice + its paired slice each, on ``--device``.
  ``--warp sample`` (``data.augment.warp: sample``, the default) warps each sample in the loader;
  ``--warp batch`` draws the same rotations, and each batch, once on ``--device``, is warped there at
  once (``warp_batch``, as the method's ``on_device`` hook does; its time included);
  ``--slices-on-device`` (with ``batch``) holds the slices on ``--device`` (``data.slices_on_device``).
  ``--warp sample batch`` times both on the same machine.

    python benchmarks/bench_data.py [--sizes 64 192 --subjects 8 --slices 10 --repeats 3]
    python benchmarks/bench_data.py --warp sample batch --device cuda --slices-on-device --out results/data_gpu.json

Prints a markdown table and writes ``benchmarks/results/data.json`` (``--out``). Each number is the best
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


def load(subjects, epochs: int = 2, warp: str = "sample", device: str = "cpu",
         held: bool = False) -> tuple[float, int]:
    import torch
    from torch.utils.data import DataLoader, default_collate

    from dafnet.data.augment import warp_batch
    from dafnet.data.slices import PairedSliceDataset, SampleConfig

    config = SampleConfig(("cine", "lge"), "lge", rotation_degrees=20.0, warp=warp)
    dataset = PairedSliceDataset(subjects, config, training=True, device=device if held else None)
    loader = DataLoader(dataset, batch_size=6, shuffle=True, collate_fn=default_collate,
                        generator=torch.Generator().manual_seed(0))
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            batch = warp_batch({k: v.to(device, non_blocking=True) for k, v in batch.items()})
            count += batch["images"].shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 192])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warp", nargs="+", choices=["sample", "batch"], default=["sample"],
                        help="data.augment.warp of the loaded rows (several: one row each)")
    parser.add_argument("--device", default="cpu", help="where batches go (and the batch warp runs): cpu, cuda")
    parser.add_argument("--slices-on-device", action="store_true",
                        help="batch rows hold the slices on --device (data.slices_on_device)")
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
            cold, warm = [], {w: [] for w in args.warp}
            for _ in range(args.repeats):
                seconds, slices, subjects = prepare(root, size)
                cold.append(slices / seconds)
                for warp in args.warp:
                    held = args.slices_on_device and warp == "batch"
                    seconds, samples = load(subjects, warp=warp, device=args.device, held=held)
                    warm[warp].append(samples / seconds)
            for warp in args.warp:
                rows.append({"size": size, "subjects": args.subjects, "slices_per_volume": args.slices,
                             "slices_prepared": slices, "nifti_mb": round(disk / 2**20, 2), "warp": warp,
                             "device": args.device, "slices_on_device": args.slices_on_device and warp == "batch",
                             "prepared_slices_per_s": max(cold), "loaded_samples_per_s": max(warm[warp]),
                             "prepared_repeats": cold, "loaded_repeats": warm[warp]})
    print("| size | slices | prepared (cold) slices/s | warp | device | loaded (cached) samples/s |")
    print("|---:|---:|---:|---|---|---:|")
    for r in rows:
        where = r["device"] + (", slices on it" if r["slices_on_device"] else "")
        print(f"| {r['size']} | {r['slices_prepared']} | {r['prepared_slices_per_s']:,.0f} | {r['warp']} | "
              f"{where} | {r['loaded_samples_per_s']:,.0f} |")
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
           "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "data", "environment": env, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
