"""dafnet's chunked torch distance correlation vs ``dcor.distance_correlation``; evaluation throughput.

    python benchmarks/bench_dcor.py                 # n = 500, 1000, 2000, 5000
    python benchmarks/bench_dcor.py --sizes 500 2000 --features 1024

Every (implementation, n) runs in a fresh process (after one warm-up call on 50 samples), so its peak resident memory (``ru_maxrss``,
minus the process's memory once the data exist) is its own. The data are binary anatomy-like
features s (n x features) and z (n x 8) that depend on s. Also times ``dafnet evaluate``'s
inner loop (DAFNet evaluation_inputs + the dice metric) in slices per second.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path


def _data(n: int, features: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    s = (rng.random((n, features)) > 0.7).astype(np.float64)
    z = s[:, :8] @ rng.normal(size=(8, 8)) + 0.5 * rng.normal(size=(n, 8))
    return s, z


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _measure(args) -> dict:
    impl, n, features, chunk, device = args
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    s, z = _data(n, features)
    warm_s, warm_z = _data(50, features, seed=1)  # JIT compilation (dcor's numba) and first-call costs
    if impl == "dcor":
        import dcor

        dcor.distance_correlation(warm_s, warm_z)
    else:
        from dafnet.metrics.dcor import distance_correlation

        distance_correlation(warm_s, warm_z, chunk=chunk, device=device)
    base = _rss_mb()
    start = time.perf_counter()
    if impl == "dcor":
        import dcor

        try:
            value = float(dcor.distance_correlation(s, z))
        except MemoryError as exc:  # dcor 0.7 broadcasts an (n, n, features) array of differences
            return {"impl": impl, "n": n, "seconds": float("nan"), "value": float("nan"),
                    "peak_rss_increase_mb": float("nan"), "error": str(exc)[:200]}
    else:
        from dafnet.metrics.dcor import distance_correlation

        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        value = distance_correlation(s, z, chunk=chunk, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"impl": impl, "n": n, "seconds": seconds, "value": value, "peak_rss_increase_mb": max(0.0, peak - base)}
    if impl == "dafnet" and device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _throughput(size: int, slices: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from dafnet.assemble import assemble
    from dafnet.config.resolve import parse_recipe, resolve
    from dafnet.metrics.dice import DiceMetric

    recipe = {"name": "bench", "data": {"source": {"name": "phantom", "params": {
        "subjects": 2, "slices": slices, "image_size": size, "modalities": ["cine", "lge"]}}}}
    source, facts, method = assemble(resolve(parse_recipe(recipe)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    method.to(device).eval()
    dataset = method.eval_dataset(source.load())
    metric = DiceMetric(DiceMetric.Params(), facts)
    loader = DataLoader(dataset, batch_size=6, collate_fn=method.collate)
    count, start = 0, time.perf_counter()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        for inputs in method.evaluation_inputs(batch):
            if inputs.prediction is not None:
                metric.update(inputs)
        count += batch["images"].shape[0]
    seconds = time.perf_counter() - start
    return {"image_size": size, "model": "paper defaults", "device": device, "slices": count,
            "seconds": seconds, "slices_per_second": count / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    parser.add_argument("--features", type=int, default=16, help="dimension of the flattened s")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--throughput-size", type=int, default=96)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dcor.json"))
    args = parser.parse_args()

    rows = []
    ctx = mp.get_context("spawn")
    for n in args.sizes:
        row = {"n": n}
        for impl in ("dafnet", "dcor"):
            with ctx.Pool(1) as pool:
                result = pool.apply(_measure, ((impl, n, args.features, args.chunk, args.device),))
            row[impl] = result
        row["speedup"] = row["dcor"]["seconds"] / row["dafnet"]["seconds"]
        row["abs_difference"] = abs(row["dcor"]["value"] - row["dafnet"]["value"])
        rows.append(row)
        print(f"n={n}: dafnet {row['dafnet']['seconds']:.3f} s, dcor {row['dcor']['seconds']:.3f} s", flush=True)
    throughput = _throughput(args.throughput_size, slices=12)

    print("\n| n | dafnet (s) | dcor (s) | speed-up | peak RSS + dafnet (MB) | peak RSS + dcor (MB) | abs diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['dafnet']['seconds']:.3f} | {r['dcor']['seconds']:.3f} | {r['speedup']:.1f}x | "
              f"{r['dafnet']['peak_rss_increase_mb']:.0f} | {r['dcor']['peak_rss_increase_mb']:.0f} | "
              f"{r['abs_difference']:.1e} |")
    print(f"\nevaluation throughput ({throughput['model']}, {throughput['image_size']} px, "
          f"{throughput['device']}): {throughput['slices_per_second']:.1f} slices/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "benchmark": "distance_correlation", "features": args.features, "z_dim": 8, "chunk": args.chunk,
        "device": args.device, "results": rows, "evaluation_throughput": throughput,
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_average": os.getloadavg(), "host": platform.node()},
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
