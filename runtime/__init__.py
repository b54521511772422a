"""Edge runtime (`edgecls.runtime`): ONNX Runtime, numpy and Pillow only; it never imports torch."""

from .classifier import Classifier, softmax
from .metadata import ModelInfo
from .preprocess import ImageError, convert_mode, load_image

__all__ = ["Classifier", "ImageError", "ModelInfo", "convert_mode", "load_image", "softmax"]
