"""A plain classifier over an edgecls ONNX file: metadata in, predictions out. An engine (engine.py) runs
the graph; this adds the file's own preprocessing and top-k."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edgecls.metadata import ModelInfo

from .engine import Engine, open_engine
from .preprocess import Preprocessor


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """classifier = Classifier("artifacts/gru/model.onnx", provider="auto")
    labels, probabilities = classifier.predict(["shoe.png", pil_image, uint8_array])"""

    def __init__(
        self,
        onnx_path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        split: bool = True,
        draft: bool = True,
        fast_jpeg: bool = True,
        precision: str = "fp32",
    ):
        """`provider`, `threads` and `precision` choose the engine (open_engine); `split=False` keeps one
        session on the CPU (see parallel.py). `draft` and `fast_jpeg`: how JPEG files decode (Preprocessor)."""
        self.path = Path(onnx_path)
        self.engine: Engine = open_engine(self.path, provider, threads, split, precision)
        self.info = ModelInfo.from_props(self.engine.metadata(), source=str(self.path))
        self.preprocess = Preprocessor.for_model(self.info, draft, fast_jpeg)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def provider(self) -> str:
        return self.engine.provider

    @property
    def providers(self) -> list[str]:
        return self.engine.providers

    @property
    def fallback_reason(self) -> str:
        return self.engine.fallback_reason

    @property
    def threads(self) -> int:
        return self.engine.threads

    def to_uint8(self, image, max_pixels: int | None = None) -> np.ndarray:
        """Any image (Preprocessor.to_uint8) -> uint8 [C, H, W] in the model's size and mode."""
        return self.preprocess.to_uint8(image, max_pixels)

    def logits(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 [N, C, H, W] in the model's size and mode -> logits [N, K]."""
        return self.run(self.preprocess.normalize(batch_uint8))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The model's own input (float32 [N, C, H, W], already normalized) -> logits [N, K]."""
        return self.engine.run(inputs)

    def top_k(self, probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Per row of probabilities, the k most probable labels with their probabilities, best first."""
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.class_names[i], float(p[i])) for i in idx] for p, idx in zip(probs, order)]

    def execution(self, rows: int) -> str:
        """How a batch of `rows` runs, in words (bench output, logs)."""
        return self.engine.execution(rows)

    def predict(self, images: Sequence, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
        """Top-1 labels and the probability matrix [N, K] for images of any mode and size."""
        probs = [
            softmax(self.logits(np.stack([self.to_uint8(im) for im in chunk]))) for chunk in _chunks(images, batch_size)
        ]
        p = np.concatenate(probs) if probs else np.zeros((0, len(self.class_names)), np.float32)
        return [self.class_names[i] for i in p.argmax(1)], p


def accuracy_pct(run, images: np.ndarray, labels: np.ndarray, batch: int = 256, prepare=None) -> float:
    """Top-1 accuracy (percent) of `run` (the model's input -> logits) over `images`, `batch` rows per
    run; `prepare` turns each slice into the model's input first (e.g. Preprocessor.normalize for uint8)."""
    prepare = prepare or (lambda rows: rows)
    preds = [run(prepare(images[i : i + batch])).argmax(1) for i in range(0, len(images), batch)]
    return float(100 * np.mean(np.concatenate(preds) == labels))


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
