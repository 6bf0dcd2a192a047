"""Benchmark: dafnet's precomputed TPS warp against kornia's per-call TPS solve and warp.

Both take control-point offsets on the fixed 5x5 grid on [-1, 1]^2 and return the warped
anatomy (bilinear, zero padding, ``align_corners=True``). dafnet multiplies a precomputed
(H*W x 25) matrix by the offsets; kornia solves the TPS system per call
(``get_tps_transform``) and evaluates the kernel at every pixel (``warp_image_tps``).
The one-time matrix precomputation is timed separately.

    python benchmarks/bench_tps.py [--batch 8 --channels 8 --size 192 --out benchmarks/results/tps.json]

Prints a markdown table and writes the JSON. Also checks numerically how the two warps agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import kornia
import torch
from kornia.geometry.transform import get_tps_transform, warp_image_tps, warp_points_tps
from torch.utils.benchmark import Timer

from dafnet.components.aligners.thin_plate import (
    ALIGN_CORNERS,
    control_grid,
    dense_displacement_matrix,
    pixel_grid,
    tps_warp,
)

GRID_SIZE = 5


def kornia_warp(image, centres, offsets):
    """Kornia's documented backward warp: output points ``centres`` sample at ``centres + offsets``."""
    source = centres + offsets
    kernel_weights, affine_weights = get_tps_transform(centres, source)
    return warp_image_tps(image, source, kernel_weights, affine_weights,
                          align_corners=ALIGN_CORNERS)


def kornia_field(height, width, centres, offsets):
    """Kornia's dense sampling locations (B, H*W, 2) for the same warp."""
    source = centres + offsets
    kernel_weights, affine_weights = get_tps_transform(centres, source)
    pixels = pixel_grid(height, width, offsets.dtype).reshape(1, -1, 2).to(offsets.device)
    return warp_points_tps(pixels.expand(offsets.shape[0], -1, -1), source, kernel_weights,
                           affine_weights)


def median_ms(fn, device: str, min_run_time: float) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def forward_backward(warp, image, offsets):
    def run():
        image.grad = offsets.grad = None
        warp(image, offsets).sum().backward()
    return run


def bench_device(device: str, batch: int, channels: int, size: int, min_run_time: float,
                 repeats: int):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(batch, channels, size, size, generator=generator).to(device)
    offsets = (0.1 * torch.randn(batch, GRID_SIZE ** 2, 2, generator=generator)).to(device)
    centres = control_grid(GRID_SIZE, torch.float32).to(device).expand(batch, -1, -1)

    start = time.perf_counter()
    matrix = dense_displacement_matrix(size, size, GRID_SIZE).float().to(device)
    base = pixel_grid(size, size, torch.float32).to(device)
    setup_ms = (time.perf_counter() - start) * 1e3

    ours = lambda i, o: tps_warp(i, o, matrix, base)  # noqa: E731
    theirs = lambda i, o: kornia_warp(i, centres, o)  # noqa: E731
    passes = {
        "forward": (lambda: ours(image, offsets), lambda: theirs(image, offsets)),
        "forward+backward": (forward_backward(ours, image, offsets),
                             forward_backward(theirs, image, offsets)),
    }
    rows = []
    for name, (run_ours, run_theirs) in passes.items():
        grad = name != "forward"
        image.requires_grad_(grad)
        offsets.requires_grad_(grad)
        ours_ms, theirs_ms = [], []
        with torch.set_grad_enabled(grad):
            for _ in range(repeats):  # interleaved, so background load hits both alike
                ours_ms.append(median_ms(run_ours, device, min_run_time))
                theirs_ms.append(median_ms(run_theirs, device, min_run_time))
        rows.append({"device": device, "pass": name, "dafnet_ms": min(ours_ms),
                     "kornia_ms": min(theirs_ms), "speedup": min(theirs_ms) / min(ours_ms),
                     "dafnet_ms_repeats": ours_ms, "kornia_ms_repeats": theirs_ms})
    return setup_ms, rows


def agreement(size: int = 64) -> dict:
    """Max differences between dafnet's and kornia's warps, in float64 on CPU."""
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(4, 3, size, size, generator=generator, dtype=torch.float64)
    centres = control_grid(GRID_SIZE).expand(4, -1, -1)
    matrix, base = dense_displacement_matrix(size, size, GRID_SIZE), pixel_grid(size, size)
    theta = torch.tensor([[1.05, 0.1, 0.04], [-0.08, 0.95, -0.03]], dtype=torch.float64)
    affine = centres @ theta[:, :2].T + theta[:, 2] - centres
    cases = {"affine offsets": affine.expand(4, -1, -1)}
    for std in (0.01, 0.05, 0.1):
        cases[f"random offsets, std {std}"] = std * torch.randn(
            4, GRID_SIZE ** 2, 2, generator=generator, dtype=torch.float64)
    out = {}
    for name, offsets in cases.items():
        ours_field = (matrix @ offsets) + base.reshape(1, -1, 2)
        their_field = kornia_field(size, size, centres, offsets)
        control_rows = [i * (size - 1) // (GRID_SIZE - 1) for i in range(GRID_SIZE)]
        out[name] = {
            "max_field_difference": (ours_field - their_field).abs().max().item(),
            "max_field_difference_px": (ours_field - their_field).abs().max().item() * (size - 1) / 2,
            "max_offset": offsets.abs().max().item(),
            "dafnet_max_displacement": (ours_field - base.reshape(1, -1, 2)).abs().max().item(),
            "kornia_max_displacement": (their_field - base.reshape(1, -1, 2)).abs().max().item(),
            "max_warped_difference": (tps_warp(image, offsets, matrix, base)
                                      - kornia_warp(image, centres, offsets)).abs().max().item(),
            "kornia_max_error_at_control_points": (
                their_field.view(4, size, size, 2)[:, control_rows][:, :, control_rows]
                .reshape(4, -1, 2) - (centres + offsets)).abs().max().item()
            if (size - 1) % (GRID_SIZE - 1) == 0 else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per timing")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved timings per pass; the fastest median is reported")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tps.json")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results, setup = [], {}
    for device in devices:
        setup[device], rows = bench_device(device, args.batch, args.channels, args.size,
                                           args.min_run_time, args.repeats)
        results.extend(rows)
    checks = agreement(65)

    print(f"TPS warp, {args.batch}x{args.channels}x{args.size}x{args.size}, 5x5 control grid, "
          f"fastest of {args.repeats} interleaved torch.utils.benchmark medians\n")
    print("| device | pass | dafnet (ms) | kornia (ms) | speedup |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['device']} | {r['pass']} | {r['dafnet_ms']:.2f} | {r['kornia_ms']:.2f} "
              f"| {r['speedup']:.1f}x |")
    print("\nOne-time matrix precomputation (ms): "
          + ", ".join(f"{d} {ms:.1f}" for d, ms in setup.items()))
    print("\nAgreement with kornia (float64, 65x65):")
    for name, c in checks.items():
        print(f"- {name}: field {c['max_field_difference']:.2e} "
              f"({c['max_field_difference_px']:.3f} px), warped {c['max_warped_difference']:.2e}, "
              f"kornia at control points {c['kornia_max_error_at_control_points']:.1e}; "
              f"max |offset| {c['max_offset']:.3f}, max |displacement| dafnet "
              f"{c['dafnet_max_displacement']:.3f}, kornia {c['kornia_max_displacement']:.3f}")

    report = {
        "benchmark": "tps_warp",
        "shape": [args.batch, args.channels, args.size, args.size],
        "grid_size": GRID_SIZE,
        "align_corners": ALIGN_CORNERS,
        "results": results,
        "precompute_ms": setup,
        "agreement_with_kornia": checks,
        "environment": {
            "torch": torch.__version__, "kornia": kornia.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min_after": os.getloadavg()[0],
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
