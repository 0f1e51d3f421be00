"""Multi-node training: two torchrun "nodes" on loopback meeting through c10d rendezvous
(gloo on CPU), as two machines would with the README's command."""

import os
import socket
import subprocess
import sys

import pytest

from fogreid.data.synth import SynthConfig, generate
from fogreid.model.checkpoint import read_checkpoint

TINY = ["--imgsz", "64", "--ids-per-batch", "4", "--instances-per-id", "2", "--seed", "3", "--epochs", "1",
        "--mode", "jdl", "--device", "cpu", "--set", "data.num_workers=0", "--set", "optim.warmup_epochs=1",
        "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_c10d_rendezvous_on_loopback(fogreid_cmd, tmp_path):
    root = tmp_path / "data"
    generate(root, SynthConfig(ids=16, cams=3, per_cam=2, imgsz=64, seed=5), progress=False)
    single, multi = tmp_path / "single", tmp_path / "multi"
    proc = subprocess.run(fogreid_cmd + ["train", "--data", str(root), "--out", str(single), *TINY],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "fogreid-test",
            "-m", "fogreid", "train", "--data", str(root), "--out", str(multi), *TINY]
    nodes = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [n.communicate(timeout=400) for n in nodes]
    for n, (_, err) in zip(nodes, outputs, strict=True):
        assert n.returncode == 0, err[-3000:]
    steps_single = read_checkpoint(single / "last.pt")["global_step"]
    steps_multi = read_checkpoint(multi / "last.pt")["global_step"]
    assert steps_multi == steps_single // 2   # two nodes, one process each: every other batch
