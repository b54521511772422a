"""Edge runtime (`edgecls.runtime`): ONNX Runtime, numpy and Pillow only; it never imports torch."""

from edgecls.metadata import ModelInfo

from .classifier import Classifier, softmax
from .engine import Engine, open_engine
from .preprocess import ImageError, Preprocessor, convert_mode, load_image

__all__ = [
    "Classifier",
    "Engine",
    "ImageError",
    "ModelInfo",
    "Preprocessor",
    "convert_mode",
    "load_image",
    "open_engine",
    "softmax",
]
