"""Inference backends (PyTorch, ONNX Runtime, TensorRT) and the stream pipeline (`fogreid run`)."""
