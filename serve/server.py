"""`edgecls serve`: check the options and the address, load the models, run the app until stopped."""

from __future__ import annotations

import logging
from pathlib import Path

from edgecls import asgi
from edgecls.errors import MissingExtra, UsageError
from edgecls.locations import find_onnx, model_sources
from edgecls.registry import model_names
from edgecls.runtime import Classifier

from .app import DECODE_WORKERS, MAX_IMAGE_PIXELS

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
    reject_nonfinite: bool = False,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    decode_workers: int = DECODE_WORKERS,
    grpc_port: int | None = None,
    shutdown_timeout: float = 30.0,
    precision: str = "fp32",
    choose=None,
) -> None:
    """`choose`: path -> (provider, precision), how each model's --precision auto is resolved (the command
    line passes edgecls.commands.choose's; the serving layer does not measure accuracy itself)."""
    if precision == "auto" and choose is None:
        raise UsageError("--precision auto needs a chooser (edgecls serve passes one); give a precision")
    if max_batch < 1:
        raise UsageError(f"--max-batch must be at least 1 (got {max_batch})")
    if not 0 <= max_delay_ms <= 10_000:
        raise UsageError(f"--max-delay-ms must be between 0 and 10000 (got {max_delay_ms:g})")
    if not max_body_mb > 0:
        raise UsageError(f"--max-body-mb must be positive (got {max_body_mb:g})")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {threads})")
    if max_image_pixels < 1:
        raise UsageError(f"--max-image-pixels must be at least 1 (got {max_image_pixels})")
    if decode_workers < 1:
        raise UsageError(f"--decode-workers must be at least 1 (got {decode_workers})")
    if not shutdown_timeout >= 0:
        raise UsageError(f"--shutdown-timeout must not be negative (got {shutdown_timeout:g})")
    asgi.check_address(host, port)
    if grpc_port is not None:
        try:
            import grpc  # noqa: F401
            import tritonclient.grpc  # noqa: F401
        except ImportError as exc:
            raise MissingExtra(f"--grpc-port needs grpcio and tritonclient's grpc messages ({exc.name} is missing); "
                               "pip install 'edgecls[grpc]'") from None  # fmt: skip
        if grpc_port != 0 and grpc_port == port:
            raise UsageError(f"--grpc-port {grpc_port} is the HTTP --port too; give each its own")
        asgi.check_address(host, grpc_port, option="--grpc-port")
    sources = model_sources(models, onnx_files, artifacts)

    def open_model(path: Path) -> Classifier:
        chosen = choose(path) if precision == "auto" else (provider, precision)
        return Classifier(path, chosen[0], threads, precision=chosen[1])

    classifiers = {name: open_model(path) for name, path in sources.items()}
    onnx_names = {name: sources[name] for name in sources if name not in (models or [])}

    def locate(name: str) -> Path:
        """The file a load reads: an --onnx file under its name, else what --model NAME resolves to now."""
        return onnx_names[name] if name in onnx_names else model_sources([name], None, artifacts)[name]

    def listing() -> list[str]:
        return sorted(set(onnx_names) | {n for n in model_names() if find_onnx(n, artifacts).is_file()})

    from .app import create_app

    app = create_app(
        classifiers, max_batch, max_delay_ms, dynamic_batching, max_body_mb, strict_input, reject_nonfinite,
        max_image_pixels, decode_workers, loader=lambda name: open_model(locate(name)),
        listing=listing, grpc_address=None if grpc_port is None else f"{host}:{grpc_port}",
    )  # fmt: skip
    for reason in dict.fromkeys(c.fallback_reason for c in classifiers.values() if c.fallback_reason):
        log.info(f"provider auto: using CPU (CUDA not available: {reason})")  # once, not once per model
    for name, clf in classifiers.items():
        log.info(f"serving {name}: {clf.path}, {clf.providers[0]}")
    batching = (
        f"dynamic batching up to {max_batch} rows, max delay {max_delay_ms:g} ms" if dynamic_batching else "no batching"
    )
    log.info(
        f"listening on http://{host}:{port} ({batching}); KServe v2: /v2/models/<name>/infer, "
        f"images: /v2/models/<name>/classify; Ctrl-C or SIGTERM stops, after the requests in flight"
    )
    asgi.run(app, host, port, shutdown_timeout)
    log.info("stopped")
