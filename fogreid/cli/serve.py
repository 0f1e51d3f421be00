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
import contextlib
import os
import sys

from fogreid.cli.common import add_backend_options, batch_size, int_in, port, seconds


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("serve", help="serve an artifact with Triton Inference Server (PyTriton), HTTP and gRPC")
    p.add_argument("--model", required=True, help="a checkpoint (.pt), ONNX file or TensorRT engine")
    p.add_argument("--name", default="fogreid", help="the model's name in Triton (default fogreid)")
    p.add_argument("--http-port", type=port, default=8000, help="default 8000")
    p.add_argument("--grpc-port", type=port, default=8001, help="default 8001")
    p.add_argument("--metrics-port", type=port, default=8002, help="default 8002")
    p.add_argument("--max-batch", type=batch_size, default=32, help="largest batch Triton forms (default 32)")
    p.add_argument("--queue-delay-us", type=int_in(0, 60_000_000), default=2000,
                   help="how long a request may wait for others to fill a batch, microseconds (default 2000)")
    p.add_argument("--start-timeout", type=seconds, default=180.0,
                   help="give up when Triton is not serving this many seconds after it was started (default 180)")
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


PORTS = ("http_port", "grpc_port", "metrics_port")


def check_model_file(path: str, backend: str) -> None:
    """The model's file read as the backend will read it (an ONNX graph's interface, a checkpoint's
    entries), before PyTriton and the ports: a damaged file is the user's to fix (exit 2)."""
    from fogreid.runtime.backends import artifact_kind

    kind = artifact_kind(path, backend)
    if kind in ("onnxruntime", "openvino"):
        from fogreid.onnx_graph import check_reid_io, load

        check_reid_io(load(path, load_weights=False), path)
    elif kind == "torch":
        from fogreid.model.checkpoint import read_checkpoint

        read_checkpoint(path)


def check_ports(args: argparse.Namespace) -> None:
    """Three different ports (Triton binds each; two equal ones made it fail while fogreid waited
    for ever), each free now: a port in use is refused here, before the model loads."""
    import socket

    from fogreid.errors import EnvironmentProblem, FogreidError

    seen: dict[int, str] = {}
    for name in PORTS:
        value, option = getattr(args, name), "--" + name.replace("_", "-")
        if value in seen:
            raise FogreidError(f"{seen[value]} and {option} are both {value}: Triton needs a port for each; give "
                               f"them different ports")
        seen[value] = option
    for value, option in seen.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", value))
            except OSError as exc:
                raise EnvironmentProblem(f"{option} {value}: cannot listen there ({exc.strerror or exc}); another "
                                         f"server holds it, or choose another port") from None


class StartWatch:
    """A bound on Triton's start: PyTriton waits for the server's HTTP endpoint (minutes, and for
    ever when the server died holding PyTriton's lock). This thread watches the tritonserver
    process; when it exits before serving, or `timeout` passes, it records why and interrupts
    the main thread, which ends the command with that reason (exit 1)."""

    def __init__(self, timeout: float) -> None:
        import threading

        self.timeout, self.reason = timeout, None
        self.ready, self.closed = threading.Event(), threading.Event()   # serving; start-up given up and cleaned
        self.triton = None

    def start(self) -> "StartWatch":
        import threading

        threading.Thread(target=self._watch, daemon=True, name="fogreid-serve-start").start()
        return self

    def _watch(self) -> None:
        import signal
        import time

        deadline = time.monotonic() + self.timeout
        while not self.ready.wait(0.5):
            server = getattr(self.triton, "_triton_server", None)
            started = server is not None and getattr(server, "_tritonserver_running_cmd", None) is not None
            if started and not server.is_alive():
                self.reason = f"Triton Inference Server exited while starting: {server_error(server)}"
            elif time.monotonic() > deadline:
                self.reason = (f"Triton Inference Server is not serving {self.timeout:g} s after it was started"
                               + (f" (last log line: {server_error(server)})" if started else "")
                               + "; see its log above, or raise --start-timeout")
            if self.reason:
                signal.raise_signal(signal.SIGINT)   # the main thread is inside PyTriton's wait
                if not self.closed.wait(30):         # and if PyTriton still does not let go:
                    print(f"fogreid serve: error: {self.reason}", file=sys.stderr, flush=True)
                    os._exit(1)
                return


def server_error(server) -> str:
    """The line of tritonserver's log that says why it stopped (its last error line), shortened."""
    try:
        lines = [line.strip() for line in server.logs().splitlines() if line.strip()]
    except Exception:
        lines = []
    errors = [line for line in lines if line[:1] == "E" or "error" in line.lower() or "failed" in line.lower()]
    found = (errors or lines or ["no output"])[-1]
    return found[:300]


def run(args: argparse.Namespace) -> int:
    from fogreid.cli.common import input_file

    input_file(args.model, "--model", "model", "model")
    check_model_file(args.model, args.backend)
    check_ports(args)
    import numpy as np

    from fogreid.errors import EnvironmentProblem

    try:
        from pytriton.decorators import batch
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        print("fogreid serve: error: needs PyTriton: pip install 'fogreid[serve]' (it pins numpy < 2: use its own "
              "environment, see README 'Scaling out')", file=sys.stderr)
        return 1
    from fogreid.runtime.backends import load_deployed

    python_library_path()
    with load_deployed(args.model, args.backend, args.device, batch=args.max_batch) as model:
        probe = model(np.zeros((1, *model.imgsz, 3), np.uint8))[1]
        h, w = model.imgsz

        @batch
        def infer(frames):
            defogged, embedding = model(frames)
            return {"defogged": defogged, "embedding": embedding}

        config = TritonConfig(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port)
        triton = Triton(config=config)
        with stop_requests() as asked:   # also how the start-up watch interrupts PyTriton's wait
            serve_until_stopped(triton, args, infer, model.name, (h, w), probe.shape[1], asked)
        if not asked:
            server = getattr(triton, "_triton_server", None)
            raise EnvironmentProblem("Triton Inference Server stopped by itself"
                                     + (f": {server_error(server)}" if server is not None else ""))
    return 0


def serve_until_stopped(triton, args: argparse.Namespace, infer, model_name: str, imgsz: tuple[int, int], dim: int,
                        asked: list[str]) -> None:
    """Start Triton (bounded by a `StartWatch`), bind the model, serve until a stop request or
    until the server or its model dies."""
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    from fogreid.errors import EnvironmentProblem

    h, w = imgsz
    watch = StartWatch(args.start_timeout)
    watch.triton = triton
    watch.start()
    try:
        triton.__enter__()          # starts tritonserver and waits for it (bounded by `watch`)
        triton.bind(model_name=args.name, infer_func=infer,
                    inputs=[Tensor(name="frames", dtype=np.uint8, shape=(h, w, 3))],
                    outputs=[Tensor(name="defogged", dtype=np.uint8, shape=(h, w, 3)),
                             Tensor(name="embedding", dtype=np.float32, shape=(dim,))],
                    config=ModelConfig(max_batch_size=args.max_batch, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=args.queue_delay_us)))
    except BaseException as exc:
        watch.ready.set()
        triton.stop()
        watch.closed.set()
        if watch.reason:
            raise EnvironmentProblem(watch.reason) from None
        if isinstance(exc, KeyboardInterrupt):
            raise
        first = next(iter(str(exc).splitlines()), "")[:300]
        raise EnvironmentProblem(f"Triton Inference Server did not start ({type(exc).__name__}: {first})") from None
    watch.ready.set()
    print(f"[serve] {model_name} as '{args.name}': HTTP :{args.http_port}, gRPC :{args.grpc_port}, "
          f"metrics :{args.metrics_port}; Ctrl-C stops", file=sys.stderr, flush=True)
    del asked[:]   # a stop asked from here on is the user's
    try:
        triton.serve()   # blocks until SIGINT / SIGTERM, or until the server or its model dies
    finally:
        triton.stop()


@contextlib.contextmanager
def stop_requests():
    """SIGINT and SIGTERM end `serve` (PyTriton's serve() takes the KeyboardInterrupt and stops
    the server); the list they fill tells a requested stop from a server that died."""
    import signal

    asked: list[str] = []

    def on_signal(signum, _frame):
        asked.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield asked
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
