"""The L2 prompt-threat model: its ONNX contract, runtime, training and evaluation."""
