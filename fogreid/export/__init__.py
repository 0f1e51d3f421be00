"""Export of the fused deploy graph to ONNX, FP16, INT8 and TensorRT engines (`fogreid export`)."""
