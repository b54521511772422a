"""Decoding image files into model input off the main process.

Measured on 2 cores with the 10,000 CIFAR-10 test JPEGs (README): decoding a 32x32 JPEG is mostly
Python-level work under the GIL, so worker threads were slower than decoding inline (0.94x), while
worker processes gave 1.46x (2 processes) and 1.70x (3). Each task decodes a whole batch and sends
back one uint8 array, so the pickling cost is one array per batch.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from .metadata import ModelInfo
from .preprocess import ImageError, image_to_uint8, load_image


def decode_batch(info: ModelInfo, draft: tuple[int, int] | None, paths: list[str]) -> list:
    """Per path: uint8 [C, H, W], or the reason (str) it is not a usable image."""
    out = []
    for p in paths:
        try:
            out.append(image_to_uint8(load_image(p, draft=draft), info))
        except ImageError as exc:
            out.append(str(exc))
    return out


def _exit_with(parent: int) -> None:
    """A worker ends itself once `parent` is gone (killed with SIGKILL, say), instead of idling on."""
    def watch():
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # a process we may not signal lives under that pid: still there
                pass

    threading.Thread(target=watch, daemon=True).start()


def process_pool(workers: int) -> ProcessPoolExecutor:
    """forkserver where there is one (Linux): workers do not inherit ONNX Runtime's threads. On POSIX
    each worker watches this process and exits when it dies (the forkserver then ends too)."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    watch = os.name == "posix"
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with if watch else None,
                               initargs=(os.getpid(),) if watch else ())
