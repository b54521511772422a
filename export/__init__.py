"""Export stage (`edgecls.export`): checkpoint -> ONNX, validated against eager PyTorch in one step."""

from .onnx_export import EXPORTERS, ExportResult, export_model

__all__ = ["EXPORTERS", "ExportResult", "export_model"]
