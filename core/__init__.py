"""edgecls: train small image classifiers in PyTorch, export them to ONNX, run them with ONNX Runtime.

This top-level module stays import-light (no torch): `edgecls.runtime` is used on edge machines that
have only onnxruntime, numpy and Pillow.
"""

__version__ = "0.1.0"
