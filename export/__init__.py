"""Export stage (`edgecls.export`): checkpoint -> validated ONNX."""
