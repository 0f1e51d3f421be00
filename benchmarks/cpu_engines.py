"""The CPU engines side by side, and what `--backend auto` picks among them.

    python benchmarks/cpu_engines.py [--export runs/demo/export] [--checkpoint CKPT] [--seconds 12]
                                     [--embedding-only]

For the FP32 and the INT8 (Q/DQ) ONNX file at batch 1 and 8: ONNX Runtime (CPU provider), OpenVINO
(CPU plugin, f32 inference precision, where installed) and, for FP32, PyTorch eager on the
checkpoint: every engine loaded as fogreid runs it (`load_deployed(..., backend=...)`, one
`DeployedModel` call from uint8 crops to the defogged image and the embedding), each in a process
of its own, as a deployment has its ReID model in its process. The engines take turns, one process
running at a time (--rounds slices of --seconds / --rounds per engine, shared by the batches; each
round starts one engine later than the last), so a busy spell of a shared machine hits every engine
alike; each cell's figure is the median of its rounds' medians.

Columns: img/s and ms per batch (medians of the rounds), the ratio to the fastest engine of the
cell (paired by round: the median over rounds of its time over this engine's in the same round),
and the share of the roofline: the model's FLOPs per image (torch's FlopCounterMode on the
checkpoint, a multiply-add counted as 2) times img/s, over the FP32 GEMM throughput measured here
(a 2048^3 float32 torch matmul on as many threads as the engines use). INT8 rows are set against the
same FP32 roofline: above 100 % would mean the integer kernels beat the float peak.

Where OpenVINO is installed, `--backend auto` runs too, as a deployment gets it: a process per file
holding one `load_deployed(path, batch=B)` per batch, which measured both engines when it loaded
and measures them again on its own calls while it runs (fogreid/runtime/auto_engine.py,
AutoBackend); its row is timed in the same rounds, and the line under it gives its ratio to the
fastest single engine, the engine it loaded on, its switches and the engine it ended on.
`--auto-repeats N` adds the load-time choice of N fresh processes per cell (a choice made once, for
comparison). Goals (issue 24): auto >= 0.95x the best engine in every cell; FP32 >= 75 % of the
roofline at batch 8. Default inputs: the demo's artifacts (runs/demo), else a fresh edge model at
--imgsz exported here.

`--embedding-only`: the ONNX engines loaded as `fogreid run` loads its ReID model when it shows no
defogged crops (`load_deployed(..., embedding_only=True)`: the graph cut down to its embedding);
the FLOPs are the encoder's and the ReID head's, and PyTorch eager, which computes both outputs,
is left out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gemm_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    """Measured FP32 GEMM throughput of this machine (torch's BLAS, its default threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    return 2 * n ** 3 * calls / (time.perf_counter() - start) / 1e9


def fresh_artifacts(imgsz: int) -> tuple[Path, dict[str, Path]]:
    """A fresh edge model (BatchNorm statistics from generated foggy images), exported here."""
    import torch

    from fogreid.calibration.images import build_calibration_set
    from fogreid.data.synth import SynthConfig, generate
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.model.build import build_model
    from fogreid.model.checkpoint import save_checkpoint
    from fogreid.model.config import preset
    from fogreid.pixels import frames_to_images

    work = Path(tempfile.mkdtemp(prefix="fogreid-cpu-engines-"))
    size = (imgsz, imgsz)
    generate(work / "data", SynthConfig(ids=24, cams=3, imgsz=imgsz), progress=False)
    calib = [str(work / "data" / "FVRID_syn" / "train_foggy"), str(work / "data" / "FVRID_real" / "train_foggy")]
    torch.manual_seed(0)
    net = build_model(preset("edge", imgsz=size)).train()
    with torch.no_grad():
        net(frames_to_images(torch.from_numpy(build_calibration_set(calib, size, 64, progress=False).images)))
    checkpoint = work / "model.pt"
    save_checkpoint(checkpoint, net.eval())
    files = export(checkpoint, parse_formats("onnx,onnx-int8"), work / "export",
                   ExportOptions(imgsz=size, calib_images=calib, calib_num=128, progress=False)).files
    return checkpoint, {"FP32": files["onnx"], "INT8": files["onnx-int8"]}


def engine_worker(conn, path: str, engine: str, batches: list[int], embedding_only: bool = False) -> None:
    """In its own process: one engine on one file; per request, a slice of timed calls at each
    batch (after 2 warm-up calls at each, once); answers {batch: median ms of the slice}. Engine
    "auto" is `--backend auto` as a deployment gets it: one load per batch (each measures at its
    batch when it loads, then again while it runs: fogreid.runtime.auto_engine.AutoBackend); a
    single engine is loaded once per batch too, as a deployment loads it for its --batch (OpenVINO
    compiles for it: fogreid.runtime.backends.OpenVinoRunner). At the end it answers {batch: (the
    engine it loaded on, the one it ended on, its switches)}."""
    import contextlib
    import io

    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.bench import measure

    with contextlib.redirect_stderr(io.StringIO()):   # auto's choice lines: reported at the end
        models = {b: load_deployed(path, "auto" if engine == "auto" else engine, "cpu", batch=b,
                                   embedding_only=embedding_only)
                  for b in batches}
        loaded_on = {b: m.name.split(":")[0] for b, m in models.items()}
        h, w = models[batches[0]].imgsz
        rng = np.random.default_rng(0)
        frames = {b: rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8) for b in batches}
        for b in batches:
            measure(models[b], frames[b], 0.0, warmup=2, min_calls=1)
        conn.send((h, w))
        while (seconds := conn.recv()) is not None:
            conn.send({b: measure(models[b], frames[b], seconds / len(batches), warmup=1).p50_ms for b in batches})
    conn.send({b: (loaded_on[b], m.name.split(":")[0], getattr(m, "switches", 0)) for b, m in models.items()})
    for model in models.values():
        model.close()


def auto_choice(path: Path, batch: int, embedding_only: bool = False) -> str:
    """The engine `--backend auto` picks in a fresh process (it measures both there)."""
    code = ("from fogreid.runtime.backends import load_deployed\n"
            f"with load_deployed({str(path)!r}, batch={batch}, embedding_only={embedding_only}) as m:\n"
            "    print('CHOSE', m.name.split(':')[0])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("CHOSE "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", default="runs/demo/export", help="folder of model.onnx and model_int8.onnx")
    parser.add_argument("--checkpoint", help="for PyTorch eager and the FLOP count (default: the export's)")
    parser.add_argument("--imgsz", type=int, default=64, help="side of the fresh model, without --export files")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="timed seconds per engine and file, over all rounds, shared by the batches")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved slices per cell")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--auto-repeats", type=int, default=0,
                        help="also: the load-time choice of this many fresh `--backend auto` loads per cell")
    parser.add_argument("--embedding-only", action="store_true",
                        help="the graphs cut down to their embedding, as `fogreid run` loads them")
    args = parser.parse_args()

    from fogreid.model.fused import FusedDefogReID
    from fogreid.model.summary import summarize
    from fogreid.runtime.auto_engine import openvino_installed

    export_dir = Path(args.export)
    if (export_dir / "model.onnx").is_file() and (export_dir / "model_int8.onnx").is_file():
        files = {"FP32": export_dir / "model.onnx", "INT8": export_dir / "model_int8.onnx"}
        checkpoint = args.checkpoint
        if checkpoint is None and (export_dir / "export.json").is_file():
            checkpoint = json.loads((export_dir / "export.json").read_text()).get("checkpoint")
        source = f"{export_dir} (checkpoint {checkpoint})"
    else:
        checkpoint, files = fresh_artifacts(args.imgsz)
        source = f"a fresh edge model at {args.imgsz} px, exported to {files['FP32'].parent}"
    batches = [int(b) for b in args.batches.split(",")]
    net = FusedDefogReID.from_checkpoint(checkpoint).net if checkpoint else None
    skipped = ("training only", "defog", "enhancement") if args.embedding_only else ("training only",)
    gflops = (sum(r.gflops for r in summarize(net) if not any(s in r.name for s in skipped))
              if net is not None else None)
    roof = gemm_gflops()

    # One process per engine and file, as a deployment has its ReID model in its process (auto's
    # holds both engines, as auto does). Only one process runs at a time (the others wait on
    # their pipe), in interleaved rounds.
    engines = ["onnxruntime"] + (["openvino"] if openvino_installed() else [])
    jobs = {(precision, engine): (str(path), engine) for precision, path in files.items() for engine in engines}
    if checkpoint and not args.embedding_only:
        jobs[("FP32", "torch")] = (str(checkpoint), "torch")
    if "openvino" in engines:   # auto has a choice to make only where OpenVINO is installed
        jobs.update({(precision, "auto"): (str(path), "auto") for precision, path in files.items()})
    context = multiprocessing.get_context("spawn")
    workers = {}
    for key, (path, engine) in sorted(jobs.items(), key=lambda kv: kv[0][1] == "auto"):
        parent, child = context.Pipe()
        proc = context.Process(target=engine_worker, args=(child, path, engine, batches, args.embedding_only),
                               daemon=True)
        proc.start()
        workers[key] = (proc, parent)
        if engine == "auto":   # its load-time probe runs with the other workers loaded and idle, as in a deployment
            workers[key][1].poll(None)
    h, w = [conn.recv() for _, conn in workers.values()][-1]

    # The one-shot load-time choice in fresh processes (for comparison with auto's measured row).
    picks: dict[tuple[str, int], Counter] = {}
    for precision, path in files.items():
        for b in batches:
            picks[(precision, b)] = Counter(auto_choice(path, b, args.embedding_only) for _ in range(args.auto_repeats))

    times: dict[tuple[str, str, int], list[float]] = {(p, e, b): [] for (p, e) in workers for b in batches}
    load_before = os.getloadavg()
    order = list(workers)
    for r in range(args.rounds):
        # Each round starts one worker later: a slice runs in every place of the round in turn
        # (a fixed order gave the last two workers 0.78-0.84x of their rate when first).
        for precision, engine in order[r % len(order):] + order[:r % len(order)]:
            conn = workers[(precision, engine)][1]
            conn.send(args.seconds / args.rounds)
            for b, ms in conn.recv().items():
                times[(precision, engine, b)].append(ms)
    load_after = os.getloadavg()
    ended: dict[tuple[str, int], tuple[str, str, int]] = {}
    for (precision, engine), (proc, conn) in workers.items():
        conn.send(None)
        if engine == "auto":
            ended.update({(precision, b): state for b, state in conn.recv().items()})
        else:
            conn.recv()
        proc.join()

    import onnxruntime
    import torch

    versions = f"ONNX Runtime {onnxruntime.__version__}, PyTorch {torch.__version__}"
    if "openvino" in engines:
        from fogreid.sessions import import_openvino

        openvino = import_openvino()
        versions += f", OpenVINO {openvino.get_version().split('-')[0]}"
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}  {cpu_name()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}; {versions}")
    print(f"model: {source}, input {h}x{w}" + (" (embedding only)" if args.embedding_only else "")
          + (f", {gflops:.3f} GFLOPs per image" if gflops else ""))
    print(f"roofline: FP32 GEMM (2048^3 torch matmul) {roof:.0f} GFLOP/s; load average "
          f"{load_before[0]:.2f} before the timed rounds, {load_after[0]:.2f} after "
          f"({args.rounds} interleaved rounds, {args.seconds / len(batches):.0f} s per cell)")
    print(f"\n{'precision':<10}{'batch':>6}  {'engine':<13}{'img/s':>9}{'ms/batch':>10}{'vs best':>9}"
          f"{'% FP32 roof':>13}")
    ratios, roofs = {}, {}
    for precision in files:
        for b in batches:
            cell = {e: float(np.median(times[(precision, e, b)])) for (p, e, bb) in times if p == precision and bb == b}
            fastest = min((e for e in cell if e != "auto"), key=cell.__getitem__)
            # "vs best" is paired by round: the machine's slow spells last longer than a round here
            # and moved whole rounds by up to 25 %, so the fastest engine's time over this one's in
            # the same round, then the median of the rounds.
            paired = {e: float(np.median(np.divide(times[(precision, fastest, b)], times[(precision, e, b)])))
                      for e in cell}
            for engine, ms in sorted(cell.items(), key=lambda kv: kv[1]):
                ips = b * 1000 / ms
                share = gflops * ips / roof * 100 if gflops else float("nan")
                roofs[(precision, engine, b)] = share
                print(f"{precision:<10}{b:>6}  {engine:<13}{ips:>9.1f}{ms:>10.2f}{paired[engine]:>8.2f}x"
                      f"{share:>12.1f}%")
            if (precision, b) in ended:
                ratios[(precision, b)] = paired["auto"]
                first, last, switches = ended[(precision, b)]
                print(f"{'':<16}auto: {paired['auto']:.2f}x {fastest}; loaded on {first}, "
                      f"{switches} switch(es) while running, ended on {last}")
            if args.auto_repeats:
                chosen = picks[(precision, b)].most_common()
                print(f"{'':<16}one-shot load-time choice in fresh processes: "
                      f"{', '.join(f'{e} {n}/{args.auto_repeats} ({paired[e]:.2f}x)' for e, n in chosen)}")
    if {"FP32", "INT8"} <= set(files):
        speedups = [f"{e} batch {b} {np.median(times[('FP32', e, b)]) / np.median(times[('INT8', e, b)]):.2f}x"
                    for e in engines for b in batches]
        print(f"\nINT8 / FP32 of the same engine (img/s): {', '.join(speedups)}")
    if ratios:
        met = all(r >= 0.95 for r in ratios.values())
        print(f"\ngoal auto >= 0.95x the best in every cell: {'met' if met else 'NOT met'} "
              f"(lowest {min(ratios.values()):.2f}x, auto's own rounds)")
    if 8 in batches and gflops:
        best8 = max(v for (p, e, b), v in roofs.items() if p == "FP32" and b == 8 and e not in ("torch", "auto"))
        print(f"goal FP32 >= 75 % of the roofline at batch 8: {'met' if best8 >= 75 else 'NOT met'} "
              f"(best ONNX engine {best8:.1f} %)")


if __name__ == "__main__":
    main()
