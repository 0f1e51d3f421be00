"""What fogreid knows about TensorRT releases, in one ground-floor module that runtime,
calibration and export all read without importing each other: the version a user names or has
installed, the release a cache header encodes, which releases have DLA, and what to install.
Nothing here imports TensorRT except `installed_tensorrt`, lazily.
"""

from __future__ import annotations

from fogreid.errors import FogreidError

DEFAULT_TRT_VERSION = (10, 3, 0)   # JetPack 6.x ships TensorRT 10.3

INSTALL_HINT = ("TensorRT's Python bindings are not installed: `pip install 'fogreid[trt]'` on an x86 "
                "GPU machine, or `sudo apt install python3-libnvinfer` on a Jetson (JetPack 6). Without "
                "them, build on the target with trtexec_trt10.sh / trtexec_trt11.sh written beside the ONNX files.")

DLA_IN_TRT11 = (11, 4, 1)                # TensorRT 11 has no DLA before 11.4.1
LAST_TRT10_WITH_DLA = (10, 7)            # "TensorRT 10.7 was the last 10.x release that supported DLA"


def parse_trt_version(text: str) -> tuple[int, int, int]:
    """'10.3' or '10.3.0' (or an installed '10.3.0.30') -> (10, 3, 0)."""
    try:
        parts = [int(p) for p in str(text).split(".")[:3]]
    except ValueError:
        parts = []
    if len(parts) < 2 or parts[0] < 8:
        raise FogreidError(f"--trt-version {text!r}: expected MAJOR.MINOR[.PATCH] of TensorRT, e.g. 10.3.0 "
                           f"(JetPack 6) or 11.1")
    return (parts[0], parts[1], parts[2] if len(parts) > 2 else 0)


def installed_tensorrt() -> tuple[int, int, int] | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return parse_trt_version(trt.__version__)


def check_dla_available(version: tuple[int, int, int]) -> None:
    """DLA by release (TensorRT docs, "Working with DLA", 11.4.1): 10.x up to 10.7; none in
    11.0-11.3 (11.4.0: Windows on ARM only); back in 11.4.1 (AGX Orin, JetPack 7.2.2)."""
    text = ".".join(map(str, version))
    if version[0] == 11 and version < DLA_IN_TRT11:
        raise FogreidError(f"--dla-core: TensorRT {text} has no DLA (TensorRT 11 brings it back in 11.4.1; "
                           f"JetPack 6 ships 10.3): build for DLA with TensorRT 10.3-10.7 or >= 11.4.1")
    if version[0] == 10 and version[:2] > LAST_TRT10_WITH_DLA:
        raise FogreidError(f"--dla-core: TensorRT {text} has no DLA (10.7 was the last 10.x release with DLA; "
                           f"JetPack 6 ships 10.3): pass --trt-version 10.3 and build on the Jetson")


def version_tag(version: tuple[int, int, int]) -> str:
    major, minor, patch = version
    # NV_TENSORRT_VERSION: major*1000+minor*100+patch up to 9.x, major*10000+minor*100+patch since 10.0
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)
