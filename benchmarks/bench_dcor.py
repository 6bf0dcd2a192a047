"""dafnet's chunked torch distance correlation vs ``dcor.distance_correlation``; evaluation throughput.

    python benchmarks/bench_dcor.py                 # n = 500, 1000, 2000, 5000
    python benchmarks/bench_dcor.py --sizes 2000 --features 64 1000 --threads 1 2 --no-throughput

Every (implementation, n, features, threads) runs in a fresh process (after one warm-up call on
50 samples), so its peak resident memory (``ru_maxrss``, minus the process's memory once the data
exist) is its own. The data are binary anatomy-like features s (n x features) and z (n x 8) that
depend on s. Implementations: ``dafnet``; ``dcor``, the package as installed (dcor 0.7 with
array_api_compat >= 1.16 never takes its scipy path: its NumPy check fails, so it broadcasts an
(n, n, features) array of differences); ``dcor_cdist``, the same package with that check forced
true, so its distance matrices come from ``scipy.spatial.distance.cdist`` (its fast path, the
fair reference). ``--threads`` sets torch's and the BLAS pools' threads of each process. Also times
``dafnet evaluate``'s inner loop (DAFNet evaluation_inputs + the dice metric) in slices per second.
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


IMPLEMENTATIONS = ("dafnet", "dcor", "dcor_cdist")
INSTALLED_LIMIT_BYTES = 8e9
REPEATS = 3


def _measure(args) -> dict:
    impl, n, features, chunk, device, threads = args
    if impl == "dcor" and n * n * features * 8 > INSTALLED_LIMIT_BYTES:  # an OOM kill would hang the pool
        return {"impl": impl, "n": n, "features": features, "threads": threads, "seconds": float("nan"),
                "value": float("nan"), "peak_rss_increase_mb": float("nan"),
                "error": f"not run: its (n, n, features) array would take {n * n * features * 8 / 1e9:.0f} GB"}
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = str(threads)  # before NumPy / torch start their pools (a fresh spawned process)
    import torch

    torch.set_num_threads(threads)
    s, z = _data(n, features)
    warm_s, warm_z = _data(50, features, seed=1)  # JIT compilation (dcor's numba) and first-call costs
    if impl == "dcor_cdist":
        import dcor.distances

        dcor.distances._can_be_numpy_double = lambda x: True  # the check array_api_compat 1.16 breaks
        impl = "dcor"
    if impl == "dcor":
        import dcor

        dcor.distance_correlation(warm_s, warm_z)
    else:
        from dafnet.metrics.dcor import distance_correlation

        distance_correlation(warm_s, warm_z, chunk=chunk, device=device)
    base = _rss_mb()
    times = []
    for _ in range(REPEATS):  # the fastest of REPEATS calls: the first one also pays first-touch costs
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
        times.append(time.perf_counter() - start)
    seconds = min(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"impl": args[0], "n": n, "features": features, "threads": threads, "seconds": seconds, "value": value,
           "peak_rss_increase_mb": max(0.0, peak - base)}
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


def _row(n: int, features: int, threads: int, args, ctx) -> dict:
    row = {"n": n, "features": features, "threads": threads}
    for impl in IMPLEMENTATIONS:
        with ctx.Pool(1) as pool:
            row[impl] = pool.apply(_measure, ((impl, n, features, args.chunk, args.device, threads),))
    for ref in ("dcor", "dcor_cdist"):
        row[f"speedup_vs_{ref}"] = row[ref]["seconds"] / row["dafnet"]["seconds"]
        row[f"abs_difference_vs_{ref}"] = abs(row[ref]["value"] - row["dafnet"]["value"])
    return row


def _table(rows: list[dict]) -> str:
    lines = ["| n | features | threads | dafnet (s) | dcor cdist path (s) | dcor as installed (s) | "
             "vs cdist | vs installed | peak RSS + MB: dafnet / cdist / installed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rss = " / ".join(f"{r[i]['peak_rss_increase_mb']:.0f}" for i in ("dafnet", "dcor_cdist", "dcor"))
        lines.append(f"| {r['n']} | {r['features']} | {r['threads']} | {r['dafnet']['seconds']:.3f} | "
                     f"{r['dcor_cdist']['seconds']:.3f} | {r['dcor']['seconds']:.3f} | "
                     f"{r['speedup_vs_dcor_cdist']:.1f}x | {r['speedup_vs_dcor']:.1f}x | {rss} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    parser.add_argument("--features", type=int, nargs="+", default=[16], help="dimensions of the flattened s")
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="torch / BLAS threads per measurement (default: all cores)")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--throughput-size", type=int, default=96)
    parser.add_argument("--no-throughput", action="store_true", help="skip the evaluation throughput")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dcor.json"))
    args = parser.parse_args()

    rows, ctx = [], mp.get_context("spawn")
    for features in args.features:
        for threads in args.threads:
            for n in args.sizes:
                rows.append(_row(n, features, threads, args, ctx))
                r = rows[-1]
                print(f"n={n} features={features} threads={threads}: dafnet {r['dafnet']['seconds']:.3f} s, "
                      f"dcor cdist {r['dcor_cdist']['seconds']:.3f} s, dcor {r['dcor']['seconds']:.3f} s", flush=True)
    throughput = None if args.no_throughput else _throughput(args.throughput_size, slices=12)
    print("\n" + _table(rows))
    if throughput:
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
