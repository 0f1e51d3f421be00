"""Peak memory of a fogreid command, and of `fogreid train` at the demo's settings.

    python benchmarks/peak_memory.py [--data runs/demo/data] [--epochs 2]   # fogreid train, as the demo trains
    python benchmarks/peak_memory.py -- fogreid run --model M.onnx --source a.mp4 ...   # any command

Two figures per command, both of the child process this script starts:

* peak RSS: the kernel's high-water mark of the command's own process (`ru_maxrss` from
  `os.wait4`, exact; worker processes it starts are not added in; taken by a small shim
  process, see SHIM);
* peak PSS of the tree: every 0.1 s, the proportional set size (`/proc/PID/smaps_rollup`:
  shared pages split among the processes sharing them) of the command and all its descendants,
  summed (DataLoader workers included); sampled, so a spike shorter than 0.1 s can be missed.

`fogreid train` runs the demo's training settings (`fogreid demo`: edge preset at 64 px,
lr 1e-3, warm-up a tenth of the epochs, a x0.1 step at two thirds, seed 0, the default data
loader's 2 workers) for --epochs epochs, then its test evaluation.
`benchmarks/stream.py` uses `run_measured` for `fogreid run` with 4 sources.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def tree_pss_kib(root: int) -> int:
    """Summed PSS (KiB) of `root` and its descendants now (RSS where smaps_rollup is unreadable)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(parents.get(pid, []))
        for name, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
            try:
                line = next(x for x in Path(name).read_text().splitlines() if x.startswith(key))
            except (OSError, StopIteration):
                continue
            total += int(line.split()[1])
            break
    return total


# The command runs as the grandchild of a small Python process that reaps it and writes its
# rusage: Linux adds the memory of the process that forked and exec'ed it (its whole RSS, e.g. a
# benchmark holding models) into the exec'ed process's ru_maxrss, so the forking process must be
# small. The shim's own ~10 MiB is the most it can add.
SHIM = """import json, os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss}, f)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(cmd: list[str], **popen) -> dict:
    """Run `cmd` to its end: exit code, seconds, peak RSS of its process and sampled peak PSS of
    its process tree (MiB), and its stdout/stderr when captured (popen: as subprocess.Popen's)."""
    import json

    with tempfile.TemporaryDirectory(prefix="fogreid-rusage-") as tmp:
        report = Path(tmp) / "rusage.json"
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", SHIM, str(report), *cmd], **popen)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], tree_pss_kib(proc.pid))
                done.wait(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        done.set()
        sampler.join()
        maxrss = json.loads(report.read_text())["maxrss_kib"] if report.is_file() else float("nan")
    return {"rc": proc.returncode, "seconds": time.perf_counter() - start, "peak_rss_mib": maxrss / 1024,
            "peak_tree_pss_mib": peak[0] / 1024, "stdout": out, "stderr": err}


def fogreid_cli() -> list[str]:
    script = Path(sys.executable).parent / "fogreid"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fogreid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/demo/data", help="the demo's dataset (generated here if absent)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ...: measure this command instead")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        if command[0] == "fogreid":
            command = fogreid_cli() + command[1:]
        rows = [(" ".join(command), run_measured(command))]
    else:
        data = Path(args.data)
        if not (data / "FVRID_syn").is_dir():
            from fogreid.data.synth import SynthConfig, generate

            data = Path(tempfile.mkdtemp(prefix="fogreid-memory-")) / "data"
            generate(data, SynthConfig(), progress=False)   # the demo's default dataset
        out = Path(tempfile.mkdtemp(prefix="fogreid-train-memory-"))
        epochs = args.epochs
        command = fogreid_cli() + [
            "train", "--data", str(data), "--out", str(out / "run"), "--imgsz", str(args.imgsz),
            "--epochs", str(epochs), "--seed", "0", "--quiet", "--set", "optim.lr=1e-3",
            "--set", f"optim.warmup_epochs={max(epochs // 10, 1)}",
            "--set", f"optim.milestones=[{max(epochs * 2 // 3, 1)}]", "--set", "optim.gamma=0.1"]
        rows = [(f"fogreid train, the demo's settings, {epochs} epochs, {data}", run_measured(command))]
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<70}{'exit':>5}{'s':>7}{'peak RSS MiB':>14}{'peak PSS tree MiB':>19}")
    for label, r in rows:
        print(f"{label[:69]:<70}{r['rc']:>5}{r['seconds']:>7.0f}{r['peak_rss_mib']:>14.0f}{r['peak_tree_pss_mib']:>19.0f}")


if __name__ == "__main__":
    main()
