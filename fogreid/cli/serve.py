"""`fogreid serve`: an artifact behind a real Triton Inference Server, through PyTriton.

PyTriton (pip `nvidia-pytriton`, the `serve` extra) bundles a `tritonserver` binary with the
Python backend only: Triton's HTTP/gRPC front end, dynamic batcher and metrics run for
real, and each batch is handed to this process, which runs the artifact with fogreid's own
backends (ONNX Runtime, PyTorch or a TensorRT engine). The repository that `fogreid export
--format triton` writes needs Triton's ONNX Runtime / TensorRT backends, which only a full
Triton install (NGC container) has. PyTriton pins numpy < 2: give it its own environment
(README, "Scaling out").
"""

from __future__ import annotations

import argparse
import os
import sys

from fogreid.cli.common import add_backend_options, positive_int


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("serve", help="serve an artifact with Triton Inference Server (PyTriton), HTTP and gRPC")
    p.add_argument("--model", required=True, help="a checkpoint (.pt), ONNX file or TensorRT engine")
    p.add_argument("--name", default="fogreid", help="the model's name in Triton (default fogreid)")
    p.add_argument("--http-port", type=positive_int, default=8000, help="default 8000")
    p.add_argument("--grpc-port", type=positive_int, default=8001, help="default 8001")
    p.add_argument("--metrics-port", type=positive_int, default=8002, help="default 8002")
    p.add_argument("--max-batch", type=positive_int, default=32, help="largest batch Triton forms (default 32)")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="how long a request may wait for others to fill a batch, microseconds (default 2000)")
    add_backend_options(p)
    p.set_defaults(run=run)


def python_library_path() -> None:
    """The Python backend's stub process links `libpython3.X.so.1.0`: make it find this
    interpreter's own, not another build of the same version (Debian's 3.11.2 beside a
    3.11.7 stdlib fails inside multiprocessing: '_thread.RLock' has no '_recursion_count')."""
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("INSTSONAME")
    if libdir and name and os.path.exists(os.path.join(libdir, name)):
        paths = [libdir] + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = ":".join(paths)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fogreid.errors import FogreidError

    for name in ("http_port", "grpc_port", "metrics_port", "max_batch"):
        if getattr(args, name) < 1:
            raise FogreidError(f"--{name.replace('_', '-')} must be >= 1")
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        print("fogreid serve: error: needs PyTriton: pip install 'fogreid[serve]' (it pins numpy < 2: use its own "
              "environment, see README 'Scaling out')", file=sys.stderr)
        return 1
    from fogreid.runtime.backends import load_model

    python_library_path()
    with load_model(args.model, args.backend, args.device) as model:
        probe = model(np.zeros((1, *model.input_size, 3), np.uint8))[1]
        h, w = model.input_size

        @batch
        def infer(frames):
            defogged, embedding = model(frames)
            return {"defogged": defogged, "embedding": embedding}

        config = TritonConfig(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port)
        with Triton(config=config) as triton:
            triton.bind(model_name=args.name, infer_func=infer,
                        inputs=[Tensor(name="frames", dtype=np.uint8, shape=(h, w, 3))],
                        outputs=[Tensor(name="defogged", dtype=np.uint8, shape=(h, w, 3)),
                                 Tensor(name="embedding", dtype=np.float32, shape=(probe.shape[1],))],
                        config=ModelConfig(max_batch_size=args.max_batch, batcher=DynamicBatcher(
                            max_queue_delay_microseconds=args.queue_delay_us)))
            print(f"[serve] {model.name} as '{args.name}': HTTP :{args.http_port}, gRPC :{args.grpc_port}, "
                  f"metrics :{args.metrics_port}; Ctrl-C stops", file=sys.stderr, flush=True)
            triton.serve()   # blocks; SIGINT / SIGTERM stop the server
    return 0
