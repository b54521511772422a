"""Edge runtime (`edgecls.runtime`): ONNX Runtime, numpy and Pillow only; never torch."""
