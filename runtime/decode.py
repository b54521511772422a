"""Decoding image files into model input off the main process.

Measured on 2 cores with the 10,000 CIFAR-10 test JPEGs (docs/guide/results.md): with Pillow, decoding a 32x32 JPEG
was mostly Python-level work under the GIL, so worker threads were slower than decoding inline
(0.94x), while worker processes gave 1.46x (2 processes) and 1.70x (3). With libjpeg-turbo called
directly (jpeg.py) such files decode as fast inline as in 2 workers or faster, while 4000x3000 photos
gain about 1.5x from 2 workers on top of reduced-scale decoding: hence infer's --workers auto. Each task
decodes a whole batch (Preprocessor.decode), so there is one hand-over per batch.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor


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
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_exit_with if watch else None,
        initargs=(os.getpid(),) if watch else (),
    )
