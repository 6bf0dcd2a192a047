"""Benchmark: one DAFNet training iteration and one fused inference slice against a plain 2D U-Net.

A DAFNet iteration is every phase of one batch of the ``labelled`` stream at 100 % annotation
(generator step, one mask-critic step and one image-critic step per modality), each a forward,
a backward and an Adam step, through the method's real phases. The reference is a plain 2D
U-Net with the anatomy encoder's widths (same ``base_filters`` and ``depth``, the same
conv/BatchNorm blocks), one modality in, L + 1 softmax outputs, Dice + CE, Adam: its
training step on the target modality's slices. The issue's target is
``DAFNet iteration / (2 x U-Net step) <= 1.3`` (two modalities, two U-Nets' worth of work).

Sizes: ``quickstart`` (recipes/quickstart.yaml: its widths, 64 px, batch 6) and ``paper``
(recipes/eri.yaml: every role at its paper defaults, the phantom at 192 px, L = 4 foreground
classes so the networks have the paper's 52,073,179 parameters; the phantom draws 3 of them,
the fourth channel simply never occurs; batch 6).

    python benchmarks/bench_train.py [--sizes quickstart paper --threads 1 2 --profile]

Prints markdown tables, writes ``benchmarks/results/train.json`` and ``train.md``.
``--device cuda --dtype fp32|bf16`` (bf16: autocast) time it on a GPU (``benchmarks/gpu.sh`` runs
both); TF32 stays at PyTorch's defaults, as in training. ``--compile MODE`` compiles both models'
networks in place as ``train.compile: MODE`` does (``default``, ``reduce-overhead``: CUDA graphs,
``max-autotune``), with ``--warmup`` untimed calls first (compilation, CUDA-graph recording). Adam is
the engine's: fused on CUDA, torch's default on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dafnet.assemble import build_data_source, build_method
from dafnet.components.keras_layers import count_trainable
from dafnet.config import load_recipe
from dafnet.engine.compiling import compile_networks
from dafnet.engine.optim import build_optimizers
from dafnet.losses import SupervisedLoss
from dafnet.methods.unet import UNet2D

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    "quickstart": {"recipe": "recipes/quickstart.yaml", "num_classes": None,
                   "overrides": ["data.annotation_fraction=1.0", "data.source.params.subjects=2"]},
    "paper": {"recipe": "recipes/eri.yaml", "num_classes": 4,
              "overrides": ["data.source=phantom", "data.source.params.image_size=192",
                            "data.source.params.subjects=1", "data.source.params.slices=6",
                            "data.annotation_fraction=1.0"]},
}


# --------------------------------------------------------------------------- setup
def build(size: str, batch_size: int, device: str, memory_format: str = "contiguous", compile_mode: str = "off"):
    """(method, labelled batch on device, optimizers per group, recipe) for a size; the networks
    compiled in place with ``compile_mode`` unless ``off`` (as the training session does)."""
    spec = SIZES[size]
    recipe = load_recipe(REPO / spec["recipe"], spec["overrides"] + [f"train.batch_size={batch_size}"])
    source, facts = build_data_source(recipe)
    if spec["num_classes"] and spec["num_classes"] != facts.num_classes:
        names = tuple(facts.class_names) + tuple(f"unused_{i}" for i in range(spec["num_classes"] - facts.num_classes))
        facts = facts.with_(num_classes=spec["num_classes"], class_names=names)
    torch.manual_seed(0)
    method = build_method(recipe, facts).to(device)
    if memory_format == "channels_last":
        method.to(memory_format=torch.channels_last)
    method.train()
    dataset = method.train_streams(source.load())["labelled"]
    batch = next(iter(DataLoader(dataset, batch_size=batch_size, collate_fn=method.collate)))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    compile_networks(method.networks(), compile_mode, torch.device(device))
    optimizers = build_optimizers(method.networks(), method.optimizer_groups(), recipe.train)
    return method, batch, optimizers, recipe


def build_unet(method, recipe, device, memory_format: str = "contiguous", compile_mode: str = "off"):
    params = method.anatomy_encoder.params
    net = UNet2D(method.facts.image_channels, method.num_classes + 1, params.base_filters, params.depth).to(device)
    if memory_format == "channels_last":
        net.to(memory_format=torch.channels_last)
    compile_networks({"unet": net}, compile_mode, torch.device(device))
    loss = SupervisedLoss(SupervisedLoss.Params(), method.facts)
    opt = build_optimizers({"unet": net}, {"unet": ["unet"]}, recipe.train)["unet"]  # the engine's Adam
    return net, loss, opt


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- one step of each
def dafnet_iteration(method, batch, optimizers, phases, autocast, device, splits=None) -> None:
    scratch: dict = {}
    for phase in phases:
        start = time.perf_counter()
        with autocast():
            out = phase.step(batch, scratch)
        if out.total.requires_grad:
            out.total.backward()
            optimizers[phase.group].step()
            optimizers[phase.group].zero_grad(set_to_none=True)
        if splits is not None:
            sync(device)
            splits.setdefault(phase.name, []).append((time.perf_counter() - start) * 1e3)


def unet_step(net, loss, opt, image, mask, autocast) -> None:
    with autocast():
        value = loss(net(image).float(), mask)
    value.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def anatomy_only(method, batch, autocast) -> None:
    """Forward + backward of the anatomy encoder on every modality: DAFNet's U-Net share of the work."""
    with autocast():
        total = sum(method.anatomy_encoder(batch["images"][:, i, 0], i).probabilities.float().mean()
                    for i in range(batch["images"].shape[1]))
    total.backward()
    method.anatomy_encoder.zero_grad(set_to_none=True)


def timed(fn, device: str, iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - start) * 1e3)
    return out


# --------------------------------------------------------------------------- where the time goes
def role_forward_times(method, run, device: str) -> dict[str, dict]:
    """Forward calls and wall time per network role during ``run()`` (CUDA: synchronised around each)."""
    stats: dict[str, dict] = {}
    handles = []
    for role, net in list(method.networks().items()):
        def pre(_m, _i, role=role):
            sync(device)
            stats.setdefault(role, {"calls": 0, "forward_ms": 0.0, "_t": 0.0})["_t"] = time.perf_counter()

        def post(_m, _i, _o, role=role):
            sync(device)
            stats[role]["calls"] += 1
            stats[role]["forward_ms"] += (time.perf_counter() - stats[role]["_t"]) * 1e3
        handles += [net.register_forward_pre_hook(pre), net.register_forward_hook(post)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return {r: {"calls": s["calls"], "forward_ms": round(s["forward_ms"], 2)} for r, s in stats.items()}


def eager():
    """Compiled networks run eagerly inside (torch >= 2.6; older: as they are), so that the FLOP
    counter sees the operations themselves."""
    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance is not None else contextlib.nullcontext()


def flops(run) -> int:
    """Floating-point operations of ``run()`` (torch.utils.flop_counter: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with eager(), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def forward_flops_per_module(method, batch, phases) -> dict[str, float]:
    """Forward GFLOPs of one iteration's phases per top-level module class (the backward's
    attribution to modules is unreliable, so only the forward is split)."""
    from torch.utils.flop_counter import FlopCounterMode

    scratch: dict = {}
    with eager(), FlopCounterMode(display=False) as counter, torch.no_grad():
        for phase in phases:
            phase.step(batch, scratch)
    per_module = {name: sum(ops.values()) / 1e9 for name, ops in counter.get_flop_counts().items()
                  if name != "Global" and "." not in name}
    return dict(sorted(per_module.items(), key=lambda kv: -kv[1]))


def top_ops(run, device: str, count: int = 12) -> list[dict]:
    """The ops with the most self CPU time in ``run()``; with CUDA also their self GPU time, and a
    last row with the kernel launches and the total GPU time of the kernels."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        sync(device)
    events = prof.key_averages()
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    total = sum(e.self_cpu_time_total for e in events)
    out = [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
            "share": round(e.self_cpu_time_total / total, 3)} for e in rows]
    if device == "cuda":
        gpu_ms = {e.key: getattr(e, "self_device_time_total", 0) / 1e3 for e in events}
        for row in out:
            row["self_gpu_ms"] = round(gpu_ms[row["op"]], 2)
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]  # kernel events only: no double count
        out.append({"op": "(all kernels)", "calls": sum(e.count for e in kernels),
                    "launches": sum(e.count for e in events if e.key.startswith("cudaLaunchKernel")),
                    "self_cpu_ms": round(total / 1e3, 2), "share": 1.0,
                    "self_gpu_ms": round(sum(e.self_device_time_total for e in kernels) / 1e3, 2)})
    return out


# --------------------------------------------------------------------------- one size
def bench_size(size, args, threads, autocast) -> dict:
    device = args.device
    method, batch, optimizers, recipe = build(size, args.batch, device, args.memory_format, args.compile)
    net, loss, opt = build_unet(method, recipe, device, args.memory_format, args.compile)
    phases = [p for p in method.phases() if p.stream == "labelled"]
    t = method.target_index
    image, mask = batch["images"][:, t, 0], batch["masks"][:, t, 0]
    iterations = args.iterations[size]
    load_before = os.getloadavg()

    dafnet_ms, unet_ms, anatomy_ms, splits = [], [], [], {}
    step_dafnet = lambda: dafnet_iteration(method, batch, optimizers, phases, autocast, device, splits)  # noqa: E731
    step_unet = lambda: unet_step(net, loss, opt, image, mask, autocast)  # noqa: E731
    step_anatomy = lambda: anatomy_only(method, batch, autocast)  # noqa: E731
    for fn in (step_dafnet, step_unet, step_anatomy):  # warm-up (allocator, kernels, compilation)
        timed(fn, device, 0, args.warmup)
    splits.clear()
    for _ in range(args.repeats):  # interleaved, so background load hits all alike
        dafnet_ms += timed(step_dafnet, device, iterations, 0)
        unet_ms += timed(step_unet, device, iterations, 0)
        anatomy_ms += timed(step_anatomy, device, iterations, 0)

    images = {m: batch["images"][:, i, 0] for i, m in enumerate(method.modalities)}
    net.eval()

    def infer_unet():
        with torch.no_grad(), autocast():
            torch.softmax(net(image), dim=1)

    def infer_dafnet():
        with autocast():
            method.predict(images)

    infer_iterations = max(iterations, 3)
    predict_ms = timed(infer_dafnet, device, infer_iterations, args.warmup)
    unet_infer_ms = timed(infer_unet, device, infer_iterations, args.warmup)
    net.train()
    load_after = os.getloadavg()

    dafnet_flops = flops(lambda: dafnet_iteration(method, batch, optimizers, phases, autocast, device))
    unet_flops = flops(step_unet)

    med = statistics.median
    row = {
        "size": size, "threads": threads, "device": device, "dtype": args.dtype, "memory_format": args.memory_format,
        "compile": args.compile, "warmup": args.warmup,
        "adam_fused": bool(next(iter(optimizers.values())).defaults["fused"]),
        "image_size": list(method.facts.image_size), "batch": args.batch, "num_classes": method.num_classes,
        "iterations_timed": len(dafnet_ms),
        "dafnet_parameters": sum(count_trainable(n) for n in method.networks().values()),
        "unet_parameters": count_trainable(net),
        "dafnet_iteration_ms": med(dafnet_ms), "unet_step_ms": med(unet_ms),
        "ratio_vs_two_unet_steps": med(dafnet_ms) / (2 * med(unet_ms)),
        "anatomy_encoders_fwd_bwd_ms": med(anatomy_ms),
        "dafnet_iteration_gflop": dafnet_flops / 1e9, "unet_step_gflop": unet_flops / 1e9,
        "flop_ratio_vs_two_unet_steps": dafnet_flops / (2 * unet_flops),
        "dafnet_forward_gflop_per_module_class": forward_flops_per_module(method, batch, phases),
        "phase_ms": {name: med(v) for name, v in splits.items()},
        "fused_inference_ms_per_slice": med(predict_ms) / args.batch,
        "unet_inference_ms_per_slice": med(unet_infer_ms) / args.batch,
        "inference_ratio_vs_two_unets": med(predict_ms) / (2 * med(unet_infer_ms)),
        "dafnet_iteration_ms_all": dafnet_ms, "unet_step_ms_all": unet_ms,
        "load_average_before": load_before, "load_average_after": load_after,
    }
    if args.profile and threads == args.threads[0]:
        run_once = lambda: dafnet_iteration(method, batch, optimizers, phases, autocast, device)  # noqa: E731
        row["role_forward_ms_one_iteration"] = role_forward_times(method, run_once, device)
        run_once()  # the profiler's first call pays for its own warm-up
        row["top_ops_one_iteration"] = top_ops(run_once, device)
    return row


# --------------------------------------------------------------------------- report
def markdown(rows: list[dict]) -> str:
    env = environment("cuda" if any(r["device"] == "cuda" for r in rows) else "cpu")
    gpu = f", GPU {env['cuda_device']}" if env["cuda_device"] else ""
    lines = [f"Machine: {env['cpu_count']} CPUs{gpu}, torch {env['torch']}; medians over the timed iterations; "
             "load average = 1-minute load before / after the row (other jobs share the machine).", "",
             "FLOP ratio: DAFNet iteration FLOPs / (2 x U-Net step FLOPs), forward + backward, counted by "
             "torch.utils.flop_counter; a faithful implementation cannot beat it on compute-bound hardware.", "",
             "| size | threads | DAFNet iteration (ms) | U-Net step (ms) | ratio vs 2 U-Net steps | FLOP ratio | "
             "anatomy encoders fwd+bwd (ms) | fused inference (ms/slice) | U-Net inference (ms/slice) | "
             "inference ratio vs 2 U-Nets | iterations | load avg (1 min) before/after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['size']} {r['image_size'][0]}px {r['device']} {r['dtype']} {r.get('memory_format', 'contiguous')}"
            f"{'' if r.get('compile', 'off') == 'off' else ' compile=' + r['compile']} | {r['threads']} | "
            f"{r['dafnet_iteration_ms']:.1f} | "
            f"{r['unet_step_ms']:.1f} | **{r['ratio_vs_two_unet_steps']:.2f}** | "
            f"{r['flop_ratio_vs_two_unet_steps']:.2f} | "
            f"{r['anatomy_encoders_fwd_bwd_ms']:.1f} | {r['fused_inference_ms_per_slice']:.2f} | "
            f"{r['unet_inference_ms_per_slice']:.2f} | {r['inference_ratio_vs_two_unets']:.2f} | "
            f"{r['iterations_timed']} | {r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f} |")
    for r in rows:
        lines += ["", f"Phases of one iteration, {r['size']}, {r['threads']} thread(s) (ms, forward + backward "
                  "+ Adam): " + ", ".join(f"{k.split('/', 1)[1]} {v:.1f}" for k, v in r["phase_ms"].items())]
        lines.append(f"FLOPs of one iteration: DAFNet {r['dafnet_iteration_gflop']:.1f} GFLOP, U-Net step "
                     f"{r['unet_step_gflop']:.1f} GFLOP (forward + backward); DAFNet forward by module class (GFLOP): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in r["dafnet_forward_gflop_per_module_class"].items()))
        if "role_forward_ms_one_iteration" in r:
            lines.append("Forward time per role in one iteration (calls, ms): " + ", ".join(
                f"{k} {v['calls']}x {v['forward_ms']:.1f}" for k, v in r["role_forward_ms_one_iteration"].items()))
        if "top_ops_one_iteration" in r:
            ops = r["top_ops_one_iteration"]
            lines.append("Top ops (self CPU): " + ", ".join(
                f"{o['op']} {100 * o['share']:.0f}%"
                + (f" (GPU {o['self_gpu_ms']:.1f} ms)" if "self_gpu_ms" in o else "")
                for o in ops[:8] if o["op"] != "(all kernels)"))
            if ops[-1]["op"] == "(all kernels)":
                lines.append(f"One profiled iteration: {ops[-1]['self_cpu_ms']:.1f} ms of CPU time in ops, "
                             f"{ops[-1]['launches']} kernel launches, {ops[-1]['calls']} kernels taking "
                             f"{ops[-1]['self_gpu_ms']:.1f} ms of GPU time")
    return "\n".join(lines) + "\n"


def environment(device: str) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "load_average_end": os.getloadavg(),
            "cuda_device": torch.cuda.get_device_name() if device == "cuda" else None}


def write(rows: list[dict], args) -> None:
    report = {"benchmark": "train_iteration", "target_ratio": 1.3,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
              "results": rows, "environment": environment(args.device)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("# Training iteration benchmark\n\n" + markdown(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["quickstart", "paper"], choices=list(SIZES))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch CPU thread counts to run")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--quickstart-iterations", type=int, default=10, help="timed iterations per repeat")
    parser.add_argument("--paper-iterations", type=int, default=2, help="timed iterations per repeat (slow on CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of DAFNet / U-Net timings")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--memory-format", default="contiguous", choices=["contiguous", "channels_last"],
                        help="layout of both models' weights (train.memory_format)")
    parser.add_argument("--compile", default="off", choices=["off", "default", "reduce-overhead", "max-autotune"],
                        metavar="MODE", help="torch.compile both models' networks in place (train.compile): off, "
                        "default, reduce-overhead (CUDA graphs), max-autotune")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls of each step before timing (default 1; 3 with --compile)")
    parser.add_argument("--profile", action="store_true",
                        help="also record forward time per role and torch.profiler's top ops (first thread count)")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows already in --out (a row of the same "
                        "size/threads/device/dtype/layout/compile is replaced)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()
    args.iterations = {"quickstart": args.quickstart_iterations, "paper": args.paper_iterations}
    if args.warmup is None:
        args.warmup = 1 if args.compile == "off" else 3
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    autocast = ((lambda: torch.autocast(args.device, dtype=torch.bfloat16)) if args.dtype == "bf16"
                else contextlib.nullcontext)

    rows = []
    if args.append and args.out.exists():
        rows = json.loads(args.out.read_text())["results"]
    for size in args.sizes:
        for threads in args.threads:
            torch.set_num_threads(threads)
            started = time.perf_counter()
            key = (size, threads, args.device, args.dtype, args.memory_format, args.compile)
            rows = [r for r in rows if (r["size"], r["threads"], r["device"], r["dtype"],
                                        r.get("memory_format", "contiguous"), r.get("compile", "off")) != key]
            rows.append(bench_size(size, args, threads, autocast))
            r = rows[-1]
            print(f"{size} threads={threads}: DAFNet {r['dafnet_iteration_ms']:.1f} ms, "
                  f"U-Net {r['unet_step_ms']:.1f} ms, "
                  f"ratio {r['ratio_vs_two_unet_steps']:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
            write(rows, args)  # after every row: a long paper-size run keeps what it has
    print("\n" + markdown(rows))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
