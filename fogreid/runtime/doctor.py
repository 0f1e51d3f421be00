"""`fogreid doctor`: what really works on this machine, tried rather than assumed."""

from __future__ import annotations

import platform
from pathlib import Path


def _try(label: str, func) -> str:
    try:
        return func()
    except Exception as exc:  # every probe reports its failure rather than stopping the report
        return f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


def _torch() -> str:
    import torch

    cuda = "no CUDA device"
    if torch.cuda.is_available():
        cuda = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)} "
                         f"(sm {'.'.join(map(str, torch.cuda.get_device_capability(i)))})"
                         for i in range(torch.cuda.device_count()))
    return f"{torch.__version__} (built for CUDA {torch.version.cuda or 'none'}); {cuda}"


def _onnxruntime() -> str:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()
    working, broken = [], {}
    for provider in ort.get_available_providers():
        try:
            session = ort.InferenceSession(model, providers=[provider])
            if session.get_providers()[0] == provider:
                working.append(provider)
            else:
                broken[provider] = f"fell back to {session.get_providers()[0]}"
        except Exception as exc:  # a listed provider whose libraries are missing: reported with its reason
            broken[provider] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return (f"{ort.__version__} (onnx {onnx.__version__}); providers that create a session: {', '.join(working)}"
            + (f"; listed but not working: {', '.join(f'{p} ({why})' for p, why in broken.items())}"
               if broken else ""))


def _openvino() -> str:
    from fogreid.sessions import import_openvino

    ov = import_openvino()

    core = ov.Core()
    devices = [f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]
    return f"{ov.get_version()}; devices: {', '.join(devices) or 'none'}"


def _tensorrt() -> str:
    import tensorrt as trt

    return trt.__version__


def _opencv() -> str:
    import cv2

    info = cv2.getBuildInformation()
    backends = [name for name in ("FFMPEG", "GStreamer", "V4L/V4L2") if f"{name}:" in info
                and info.split(f"{name}:")[1].split("\n")[0].strip().startswith("YES")]
    return f"{cv2.__version__} from {Path(cv2.__file__).parent}; video back-ends: {', '.join(backends) or 'none'}"


def _jetson() -> str:
    model = Path("/proc/device-tree/model")
    if not model.exists():
        return "not a Jetson"
    text = model.read_text().strip("\x00 \n")
    release = Path("/etc/nv_tegra_release")
    l4t = release.read_text().split("\n")[0] if release.exists() else "L4T release unknown"
    return f"{text}; {l4t} (L4T R36 = JetPack 6)"


def report() -> list[tuple[str, str]]:
    return [("python", f"{platform.python_version()} on {platform.machine()} {platform.system()}"),
            ("torch", _try("torch", _torch)), ("onnxruntime", _try("onnxruntime", _onnxruntime)),
            ("openvino", _try("openvino", _openvino)),
            ("tensorrt", _try("tensorrt", _tensorrt)), ("opencv", _try("opencv", _opencv)),
            ("jetson", _try("jetson", _jetson))]
