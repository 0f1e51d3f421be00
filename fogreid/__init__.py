"""fogreid: foggy-weather vehicle re-identification, from training to TensorRT deployment.

Importing the package is cheap: torch, OpenCV, ONNX Runtime and TensorRT are imported by
the modules that use them, when they are used.
"""

__version__ = "0.1.0"
