"""`edgecls serve`: check the options and the address, load the models, run the app until stopped."""

from __future__ import annotations

import logging

from edgecls import asgi
from edgecls.errors import UsageError
from edgecls.locations import model_sources
from edgecls.runtime import Classifier

log = logging.getLogger(__name__)


def serve(
    models: list[str] | None = None,
    onnx_files: list[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    provider: str = "auto",
    threads: int | None = None,
    max_batch: int = 64,
    max_delay_ms: float = 0.0,
    dynamic_batching: bool = True,
    max_body_mb: float = 16.0,
    artifacts: str | None = None,
    strict_input: bool = False,
) -> None:
    if max_batch < 1:
        raise UsageError(f"--max-batch must be at least 1 (got {max_batch})")
    if not 0 <= max_delay_ms <= 10_000:
        raise UsageError(f"--max-delay-ms must be between 0 and 10000 (got {max_delay_ms:g})")
    if not max_body_mb > 0:
        raise UsageError(f"--max-body-mb must be positive (got {max_body_mb:g})")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {threads})")
    asgi.check_address(host, port)
    sources = model_sources(models, onnx_files, artifacts)
    classifiers = {name: Classifier(path, provider, threads) for name, path in sources.items()}

    from .app import create_app

    app = create_app(classifiers, max_batch, max_delay_ms, dynamic_batching, max_body_mb, strict_input)
    for reason in dict.fromkeys(c.fallback_reason for c in classifiers.values() if c.fallback_reason):
        log.info(f"provider auto: using CPU (CUDA not available: {reason})")  # once, not once per model
    for name, clf in classifiers.items():
        log.info(f"serving {name}: {clf.path}, {clf.providers[0]}")
    batching = (
        f"dynamic batching up to {max_batch} rows, max delay {max_delay_ms:g} ms" if dynamic_batching else "no batching"
    )
    log.info(
        f"listening on http://{host}:{port} ({batching}); KServe v2: /v2/models/<name>/infer, "
        f"images: /v2/models/<name>/classify; Ctrl-C stops"
    )
    asgi.run(app, host, port)
    log.info("stopped")
