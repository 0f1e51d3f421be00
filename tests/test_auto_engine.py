"""`--backend auto` on an ONNX file on the CPU: the engine measured faster here (ONNX Runtime or
OpenVINO), printed, overridable, and ONNX Runtime where OpenVINO is not installed. Both engines
run for real; only the timing is steered, by slowing one engine's calls inside the probe."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fogreid.runtime.auto_engine import MARGIN, pick, time_engines
from fogreid.runtime.backends import load_deployed


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.model.build import build_model
    from fogreid.model.checkpoint import save_checkpoint
    from fogreid.model.config import preset

    out = tmp_path_factory.mktemp("auto_engine")
    torch.manual_seed(0)
    save_checkpoint(out / "tiny.pt", build_model(preset("edge", imgsz=(32, 32))).eval())
    return export(out / "tiny.pt", parse_formats("onnx"), out / "export", ExportOptions(progress=False)).files["onnx"]


def slowed(engine: str, times: int = 4):
    """A probe that times both engines for real, with `engine` doing each call `times` times (and
    a 10 ms sleep): decisively slower however busy the machine is."""
    def probe(calls, frames):
        def slow(call):
            def run(x):
                time.sleep(0.01)
                for _ in range(times - 1):
                    call(x)
                return call(x)
            return run
        return time_engines({name: slow(call) if name == engine else call for name, call in calls.items()}, frames,
                            seconds=0.2)
    return probe


@pytest.mark.parametrize("slow, fast", [("onnxruntime", "openvino"), ("openvino", "onnxruntime")])
def test_auto_takes_the_engine_measured_faster_and_says_so(tiny_onnx, capsys, slow, fast):
    pytest.importorskip("openvino")
    with load_deployed(tiny_onnx, batch=4, probe=slowed(slow)) as model:
        assert model.name == f"{fast}:{tiny_onnx.name}"
        frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
        _, embedding = model(frames)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"backend auto: {fast} (") and "ms/batch of 4) over " in line and f"{slow} (" in line
    assert "--backend to choose" in line and model.choice == line
    with load_deployed(tiny_onnx, backend=slow) as other:   # the loser was closed, not broken: same answer
        assert (other(frames)[1] * embedding).sum(axis=1).min() > 0.9999


def test_named_backend_is_not_measured(tiny_onnx, capsys):
    pytest.importorskip("openvino")
    for backend in ("onnxruntime", "openvino"):
        with load_deployed(tiny_onnx, backend=backend, batch=8, probe=slowed(backend)) as model:
            assert model.name.startswith(f"{backend}:") and model.choice is None
    assert "backend auto" not in capsys.readouterr().err


def test_without_openvino_auto_is_onnxruntime(tiny_onnx, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)   # `import openvino` now fails, as where it is not installed
    with load_deployed(tiny_onnx, batch=8, probe=slowed("onnxruntime")) as model:
        assert model.name.startswith("onnxruntime:") and model.choice is None
    assert "backend auto" not in capsys.readouterr().err


def test_tie_keeps_onnxruntime_and_probe_is_interleaved_and_bounded():
    assert pick({"onnxruntime": 10.0, "openvino": 10.0 / (1 + MARGIN) + 0.01}) == "onnxruntime"
    assert pick({"onnxruntime": 10.0, "openvino": 9.0}) == "openvino"
    assert pick({"onnxruntime": 9.0, "openvino": 10.0}) == "onnxruntime"
    order = []
    calls = {name: (lambda x, name=name: order.append(name) or time.sleep(0.01)) for name in ("a", "b")}
    tic = time.perf_counter()
    ms = time_engines(calls, np.zeros(1), seconds=0.12)
    assert time.perf_counter() - tic < 1.0 and set(ms) == {"a", "b"} and all(t >= 10 for t in ms.values())
    blocks = [name for i, name in enumerate(order[2:]) if i == 0 or order[2:][i - 1] != name]
    assert blocks == ["a", "b", "a", "b"]    # after a warm-up call each, 3 rounds: a b | b a | a b
    assert order.count("a") == order.count("b") >= 1 + 3 * 2
    slow = {name: (lambda x: time.sleep(0.1)) for name in ("a", "b")}
    tic = time.perf_counter()
    time_engines(slow, np.zeros(1), seconds=0.1)   # a call longer than the budget: one round
    assert time.perf_counter() - tic < 0.5


def test_bench_prints_the_choice_per_batch_and_backend_overrides(tiny_onnx, fogreid_cmd):
    pytest.importorskip("openvino")
    run = subprocess.run(fogreid_cmd + ["bench", "--model", str(tiny_onnx), "--batch", "1,2", "--seconds", "0.1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    choices = [line for line in run.stderr.splitlines() if line.startswith("backend auto: ")]
    assert [c.split("ms/batch of ")[1].split(")")[0] for c in choices] == ["1", "2"]
    rows = [line.split() for line in run.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [r[-1] for r in rows] == [c.split()[2] for c in choices]   # each row ran on its batch's choice
    forced = subprocess.run(fogreid_cmd + ["bench", "--model", str(tiny_onnx), "--batch", "1", "--seconds", "0.1",
                                           "--backend", "openvino"], capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0 and "backend auto" not in forced.stderr
    assert forced.stdout.splitlines()[-1].split()[-1] == "openvino"


def test_cpu_sessions_do_not_spin(tiny_onnx):
    """ONNX Runtime's CPU threads sleep between ops (fogreid.sessions.cpu_options): spinning ones
    took 1.7-2.4x longer per call on the shared 2-core machine (docs/benchmarks.md, CPU engines)."""
    from fogreid.sessions import onnxruntime_session

    for device in ("cpu", "auto"):
        session = onnxruntime_session(tiny_onnx, device)
        if session.get_providers() == ["CPUExecutionProvider"]:
            assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


class Slowed:
    """A real engine whose every call also sleeps `seconds`: decisively slower, whatever the machine."""

    def __init__(self, engine, seconds: float = 0.01) -> None:
        self.engine, self.seconds, self.calls = engine, seconds, 0

    def __call__(self, frames):
        self.calls += 1
        time.sleep(self.seconds)
        return self.engine(frames)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_auto_measures_again_while_running_and_moves_to_the_faster_engine(tiny_onnx, capsys, monkeypatch):
    """The load-time probe saw OpenVINO slower; then ONNX Runtime becomes the slow one (as when the
    machine's load changes): within a few checks of the caller's own calls, auto moves, says so
    once, and every call's answer is right whichever engine gave it."""
    pytest.importorskip("openvino")
    from fogreid.runtime import auto_engine

    monkeypatch.setattr(auto_engine, "RECHECK_SECONDS", 0.0)   # check at once, and after every check
    monkeypatch.setattr(auto_engine, "CHECK_BLOCK_SECONDS", 0.02)
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    with load_deployed(tiny_onnx, batch=2, probe=slowed("openvino"), backend="onnxruntime") as reference:
        expected = reference(frames)[1]
    with load_deployed(tiny_onnx, batch=2, probe=slowed("openvino")) as model:
        assert model.name.startswith("onnxruntime:") and model.switches == 0
        model.engines["onnxruntime"] = Slowed(model.engines["onnxruntime"])
        sizes = [2, 3] * 40   # a pipeline's calls vary in size: the check compares like with like
        for calls, n in enumerate(sizes, 1):   # noqa: B007 - `calls` is reported after the loop
            _, embedding = model(frames[:n])
            assert (embedding * expected[:n]).sum(axis=1).min() > 0.9999
            if model.name.startswith("openvino:"):
                break
        assert model.name.startswith("openvino:") and model.switches == 1, f"still on {model.name} after {calls} calls"
        assert model.imgsz == (32, 32) and model.path == tiny_onnx   # the answering engine's attributes
        for n in sizes[:30]:   # the slowed engine keeps losing the checks: no switch back
            model(frames[:n])
        assert model.switches == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("backend auto")]
    assert len(lines) == 2 and lines[0].startswith("backend auto: onnxruntime (")
    assert lines[1].startswith("backend auto: openvino (") and "[measured again while running;" in lines[1]
    assert model.choice == lines[1]
    assert not any(engine.runner.is_active for engine in model.engines.values())   # closed both


def test_auto_checks_back_off_and_survive_concurrent_callers(tiny_onnx, monkeypatch):
    pytest.importorskip("openvino")
    import threading

    from fogreid.runtime import auto_engine

    monkeypatch.setattr(auto_engine, "RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(auto_engine, "CHECK_BLOCK_SECONDS", 0.005)
    with load_deployed(tiny_onnx, batch=1, probe=slowed("openvino")) as model:
        model.engines["openvino"] = Slowed(model.engines["openvino"])
        model._base_interval = model._interval = 0.01   # checks that keep the engine double the wait
        frames = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
        expected = model(frames)[1]
        errors = []

        def caller():
            try:
                for _ in range(60):
                    assert (model(frames)[1] * expected).sum() > 0.9999
            except Exception as exc:   # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and model.name.startswith("onnxruntime:") and model.switches == 0
        assert model._interval > 0.01


def test_auto_closes_the_other_engine_once_the_choice_has_held(tiny_onnx, capsys, monkeypatch):
    """RELEASE_AFTER checks in a row that keep the engine: the other one is closed (its memory
    back) and never called again; the model keeps answering."""
    pytest.importorskip("openvino")
    from fogreid.runtime import auto_engine

    monkeypatch.setattr(auto_engine, "RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(auto_engine, "CHECK_BLOCK_SECONDS", 0.005)
    monkeypatch.setattr(auto_engine, "RELEASE_AFTER", 2)
    frames = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    with load_deployed(tiny_onnx, batch=2, probe=slowed("openvino")) as model:
        model._base_interval = model._interval = 0.0
        loser = model.engines["openvino"]
        model.engines["openvino"] = slow = Slowed(loser)
        for _ in range(400):
            model(frames)
            if model.released:
                break
        assert model.released and model.switches == 0 and model.name.startswith("onnxruntime:")
        assert not loser.runner.is_active and model.engines["onnxruntime"].runner.is_active
        before = slow.calls
        assert before > 0   # it was measured before it was closed
        for _ in range(20):
            assert np.isfinite(model(frames)[1]).all()
        assert slow.calls == before   # and never called after
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "backend auto: onnxruntime kept by 2 checks in a row; openvino closed"
