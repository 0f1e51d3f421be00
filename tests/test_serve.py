"""`fogreid serve`: a real tritonserver (PyTriton's) on loopback, queried with tritonclient.

PyTriton pins numpy < 2, so it lives in its own environment: `.venv-serve` beside `.venv`
(`.ci/run` makes it), or the interpreter named by FOGREID_SERVE_PYTHON."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SIZE, foggy_frames, free_ports, make_checkpoint, run_onnx

http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")
SERVE_PYTHON = os.environ.get("FOGREID_SERVE_PYTHON") or str(Path(__file__).parents[1] / ".venv-serve/bin/python")
pytestmark = pytest.mark.skipif(not Path(SERVE_PYTHON).exists(),
                                reason=f"no PyTriton environment at {SERVE_PYTHON} (.ci/run makes it)")


def test_serve_answers_like_the_artifact(synth_root, tmp_path):
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats

    ckpt = make_checkpoint(tmp_path / "edge.pt", synth_root)
    model = export(ckpt, parse_formats("onnx"), tmp_path / "export", ExportOptions(progress=False)).files["onnx"]
    http_port, grpc_port, metrics_port = free_ports(3)
    server = subprocess.Popen([SERVE_PYTHON, "-m", "fogreid", "serve", "--model", str(model), "--max-batch", "8",
                               "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                               "--metrics-port", str(metrics_port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.time() + 180
        while time.time() < deadline and server.poll() is None:
            try:
                if client.is_model_ready("fogreid"):
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        assert server.poll() is None and client.is_model_ready("fogreid"), "the server did not come up"
        config = client.get_model_config("fogreid")
        assert config["max_batch_size"] == 8 and "dynamic_batching" in config
        assert [i["name"] for i in config["input"]] == ["frames"]
        assert [o["name"] for o in config["output"]] == ["defogged", "embedding"]

        frames = foggy_frames(synth_root, 6)
        inputs = http.InferInput("frames", list(frames.shape), "UINT8")
        inputs.set_data_from_numpy(frames)
        reply = client.infer("fogreid", [inputs])
        defogged, embedding = run_onnx(model, frames)
        assert np.array_equal(reply.as_numpy("defogged"), defogged)
        assert ((reply.as_numpy("embedding") * embedding).sum(1)).min() >= 0.9999
        assert reply.as_numpy("defogged").shape == (6, *SIZE, 3)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
