"""A plain classifier over an edgecls ONNX file: metadata in, predictions out, ONNX Runtime only."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from edgecls.errors import EdgeclsError

from .metadata import INPUT_NAME, ModelInfo
from .parallel import BatchParallel, available_cpus, split_count
from .preprocess import file_to_uint8, image_to_uint8, normalize
from .session import create_session


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """classifier = Classifier("artifacts/gru/model.onnx", provider="auto")
    labels, probabilities = classifier.predict(["shoe.png", pil_image, uint8_array])"""

    def __init__(self, onnx_path: str | Path, provider: str = "auto", threads: int | None = None,
                 split: bool = True, draft: bool = True, fast_jpeg: bool = True):
        """`threads`: CPU threads to use [all this process may use]. On the CPU, batches large enough are
        split across that many 1-thread sessions (`split=False` keeps one session; see parallel.py).
        `draft`: JPEG files much larger than the model's input decode at a reduced scale (load_image).
        `fast_jpeg`: JPEG files decode through libjpeg-turbo directly, to the same pixels as Pillow
        (jpeg.py); False decodes every file with Pillow (the earlier path, for comparisons)."""
        path = Path(onnx_path)
        if not path.is_file():
            raise EdgeclsError(f"no ONNX model at {path}; run `edgecls export` first or pass --onnx FILE")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise EdgeclsError(f"--threads must be a whole number of at least 1 (got {threads!r})")
        self.path = path
        self.session, self.fallback_reason = create_session(str(path), provider, threads)
        props = self.session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_props(props, source=str(path))
        self.providers = self.session.get_providers()
        self.provider = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.threads = threads or available_cpus()
        c, h, w = self.info.input_shape
        self.draft_size = (2 * w, 2 * h) if draft else None  # never below twice the input: resize still antialiases
        self.fast_jpeg = fast_jpeg
        self.parallel = None
        if split and self.provider == "cpu" and self.threads >= 2:
            self.parallel = BatchParallel(lambda: create_session(str(path), "cpu", 1)[0], INPUT_NAME, self.threads,
                                          whole=self.session)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def to_uint8(self, image, strict_size: bool = False) -> np.ndarray:
        """A path, a binary file object, a Pillow image, or a uint8 array (H×W, H×W×C or C×H×W)
        -> uint8 [C, H, W]. Files are decoded with file_to_uint8 (`strict_size`: the server's limit)."""
        if isinstance(image, (str, Path)) or hasattr(image, "read"):
            return file_to_uint8(image, self.info, self.draft_size, strict_size, self.fast_jpeg)
        if isinstance(image, np.ndarray):
            if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
                image = image.transpose(1, 2, 0)
            image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
        return image_to_uint8(image, self.info)

    def logits(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 [N, C, H, W] in the model's size and mode -> logits [N, K]."""
        return self.run(normalize(batch_uint8, self.info))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The model's own input (float32 [N, C, H, W], already normalized) -> logits [N, K]."""
        if self.parallel is not None:
            return self.parallel.run(inputs)
        return self.session.run(None, {INPUT_NAME: inputs})[0]

    def top_k(self, probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Per row of probabilities, the k most probable labels with their probabilities, best first."""
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.class_names[i], float(p[i])) for i in idx] for p, idx in zip(probs, order)]

    def execution(self, rows: int) -> str:
        """How a batch of `rows` runs, in words (bench output, logs)."""
        k = split_count(rows, self.threads) if self.parallel is not None else 1
        if k > 1:
            return f"{k} x 1-thread sessions"
        return f"1 session, {self.threads} thread{'s' if self.threads > 1 else ''}" if self.provider == "cpu" else "CUDA"

    def predict(self, images: Sequence, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
        """Top-1 labels and the probability matrix [N, K] for images of any mode and size."""
        probs = [softmax(self.logits(np.stack([self.to_uint8(im) for im in chunk])))
                 for chunk in _chunks(images, batch_size)]
        p = np.concatenate(probs) if probs else np.zeros((0, len(self.class_names)), np.float32)
        return [self.class_names[i] for i in p.argmax(1)], p


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
