"""The `edgecls` command line: each command calls one library function; user errors become one line."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import sys

import click

from edgecls import __version__
from edgecls.errors import EdgeclsError, MissingExtra, UsageError
from edgecls.locations import RUNS
from edgecls.registry import model_names


class CommandError(click.ClickException):
    """One `Error:` line and the exit code of the error it stands for."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class _Echo(logging.Handler):
    """Library code logs; a command shows its INFO lines and up as plain text on stdout (or stderr)."""

    def __init__(self, err: bool):
        super().__init__(logging.INFO)
        self.err = err
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=self.err)


@contextlib.contextmanager
def _logging_to(err: bool):
    logger = logging.getLogger("edgecls")
    handler, saved = _Echo(err), (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def exit_code(exc: EdgeclsError, nothing_run: bool) -> int:
    """The exit-code contract, in one place: a UsageError (or a missing extra) is 2, any other
    EdgeclsError 1; in the commands whose help says "2: nothing run" (infer, serve, web, triton) every
    error stops them before they start, so it is 2 there."""
    return 2 if nothing_run else exc.exit_code


INTERRUPTED = "interrupted; files already written are complete (use --resume to continue training)"


def cli_errors(nothing_run: bool = False, log_to_stderr=False, interrupted: str | None = INTERRUPTED):
    """Run a command: its log lines shown, typed errors as one `Error:` line with their exit code (never a
    traceback), Ctrl-C as exit 130. `log_to_stderr` (or a function of the command's arguments saying so):
    for the servers, whose log is not their output. `interrupted`: the line Ctrl-C prints (None: click's
    own "Aborted!")."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _logging_to(err=log_to_stderr(kwargs) if callable(log_to_stderr) else log_to_stderr):
                try:
                    return fn(*args, **kwargs)
                except EdgeclsError as exc:
                    raise CommandError(str(exc), exit_code(exc, nothing_run)) from None
                except KeyboardInterrupt:
                    if interrupted is None:
                        raise
                    click.echo(interrupted, err=True)
                    sys.exit(130)

        return wrapper

    return decorate


# What `pip install '.[train]'` adds; the core install (infer, serve, triton) has none of it.
TRAIN_EXTRA = ("torch", "torchvision", "onnx", "onnxscript", "matplotlib")


def missing_training_extra() -> list[str]:
    return [m for m in TRAIN_EXTRA if importlib.util.find_spec(m) is None]


def needs_training_extra(fn):
    """Commands that train or run PyTorch: one line naming the extra when it is not installed."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        missing = missing_training_extra()
        if missing:
            raise MissingExtra(
                f"`edgecls {click.get_current_context().info_name}` needs the training extra "
                f"(missing: {', '.join(missing)}); install it with pip install 'edgecls[train]' "
                "(in a checkout: pip install -e '.[train]')"
            )
        return fn(*args, **kwargs)

    return wrapper


def choice_option(name: str, choices: list[str], default: str, help: str):
    """An option with a fixed set of values and a default that --help shows."""
    return click.option(name, type=click.Choice(choices), default=default, show_default=True, help=help)


def _known_model(ctx, param, name: str) -> str:
    """An unknown --model is a usage error before anything runs (not, say, a missing runs/NAME/ file)."""
    from edgecls.registry import get_spec

    try:
        return get_spec(name).name
    except EdgeclsError as exc:
        raise click.BadParameter(str(exc)) from None


model_option = click.option(
    "--model",
    "model",
    required=True,
    metavar="NAME",
    callback=_known_model,
    help=f"Registered model: {', '.join(model_names())}.",
)
artifacts_option = click.option(
    "--artifacts",
    default=RUNS,
    show_default=True,
    type=click.Path(),
    help="Folder of your runs, one sub-folder per model (the shipped models in artifacts/ are never written to).",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="Data root (torchvision layout). Else $EDGECLS_DATA, /usr/share/datasets, "
    "or a torchvision download into the user cache.",
)


class WholeSummaries(click.Group):
    """`edgecls --help` lists each command's first sentence whole; click cuts it to the terminal width."""

    def format_commands(self, ctx, formatter):
        rows = [
            (name, self.get_command(ctx, name).get_short_help_str(limit=10_000)) for name in self.list_commands(ctx)
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=WholeSummaries, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecls")
def main():
    """Train small image classifiers, export them to ONNX, and run them with ONNX Runtime."""


@main.command("models")
@cli_errors()
def models_cmd():
    """List the model zoo: dataset, input shape, classes, parameter count, and the model file each uses."""
    from edgecls.locations import model_origin
    from edgecls.registry import all_specs

    rows = [("name", "dataset", "input", "classes", "params", "architecture", "model file (infer --model)")]
    for spec in all_specs():  # the registry's own figures: listing the zoo never imports torch
        shape = "x".join(map(str, spec.input_shape))
        rows.append((spec.name, spec.dataset, shape, str(spec.num_classes), f"{spec.params:,}", spec.summary,
                     model_origin(spec.name)))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@main.command("train")
@model_option
@click.option("--epochs", type=int, default=None, help="Epochs (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Batch size (default: the model's).")
@click.option("--lr", type=float, default=None, help="Peak learning rate of the cosine schedule.")
@click.option(
    "--limit", type=int, default=None, help="Train on only N training images (a seeded random subset; for quick runs)."
)
@data_dir_option
@choice_option(
    "--device", ["auto", "cpu", "cuda"], "auto", "Where to train; auto takes a CUDA GPU when torch sees one."
)
@click.option("--seed", type=int, default=None, help="Seed of split, init, order and augmentation [0].")
@click.option(
    "--select",
    type=click.Choice(["val_loss", "val_acc"]),
    default=None,
    help="Epoch the checkpoint keeps: lowest validation loss or highest validation accuracy [the model's default].",
)
@artifacts_option
@click.option("--resume", is_flag=True, help="Continue the run in <artifacts>/<model>/ after its last epoch.")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="PyTorch threads per process [torch's default; under torchrun: cores / processes per node]. "
    "On a shared machine give each job its share of the cores.",
)
@cli_errors()
@needs_training_extra
def train_cmd(model, **options):
    """Train MODEL on its real data set; writes checkpoint.pt, history.json and curves.png.

    Data-parallel on several processes or machines: torchrun --standalone --nproc-per-node=2 -m edgecls
    train --model gru (--batch-size stays the global batch; rank 0 writes the files)."""
    from edgecls.train import train

    train(model, **options)  # the options are named as train's keywords


@main.command("export")
@model_option
@click.option(
    "--checkpoint",
    type=click.Path(),
    default=None,
    help="Checkpoint to export [default: <artifacts>/<model>/checkpoint.pt].",
)
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset to write.")
@choice_option(
    "--exporter",
    ["auto", "dynamo", "torchscript", "steps"],
    "auto",
    "Graph form: torch.onnx's dynamo or torchscript exporter, or steps (rnn and birnn: the recurrence as "
    "Gemm+Tanh steps, fastest on ONNX Runtime); auto exports every form that applies, validates each and keeps "
    "the fastest.",
)
@click.option("--atol", type=float, default=None, help="Max |logit difference| accepted [the model's, 1e-4].")
@data_dir_option
@artifacts_option
@click.option(
    "--no-validate",
    is_flag=True,
    help="DANGEROUS: skip the parity check against PyTorch (the file is labelled unvalidated).",
)
@click.option(
    "--ort",
    is_flag=True,
    help="Also write model.ort (ORT format, for mobile and minimal builds) and required_operators.config, "
    "kept only when the .ort logits match model.onnx within --atol.",
)
@cli_errors()
@needs_training_extra
def export_cmd(model, checkpoint, opset, exporter, atol, data_dir, artifacts, no_validate, ort):
    """Export MODEL to <artifacts>/<model>/model.onnx and check it against PyTorch; a parity failure
    exits non-zero and leaves no model.onnx behind."""
    from edgecls.export import export_model

    export_model(
        model,
        artifacts=artifacts,
        checkpoint=checkpoint,
        opset=opset,
        exporter=exporter,
        atol=atol,
        validate_parity=not no_validate,
        data_dir=data_dir,
        ort=ort,
    )


@main.command(
    "quantize",
    epilog="Exit codes: 0 the variant was written; 1 no setting kept accuracy within 0.5 "
    "points of fp32 (nothing written), or bad input.",
)
@model_option
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp16"]),
    required=True,
    help="int8: static QDQ quantization calibrated on training images (for CPUs with VNNI or ARM dot "
    "product); fp16: half-precision weights and compute with float32 inputs/outputs (for CUDA).",
)
@click.option(
    "--onnx",
    "onnx_file",
    type=click.Path(),
    default=None,
    help="The fp32 file [the one `edgecls infer --model NAME` uses].",
)
@click.option("--calibration", type=int, default=512, show_default=True, help="Training images for int8 calibration.")
@data_dir_option
@click.option(
    "--artifacts",
    type=click.Path(),
    default=None,
    help=f"Read <artifacts>/<NAME>/model.onnx and write model.<precision>.onnx beside it [default: write to "
    f"{RUNS}/<NAME>/, from the file `edgecls infer --model NAME` uses].",
)
@cli_errors()
@needs_training_extra
def quantize_cmd(model, precision, onnx_file, calibration, data_dir, artifacts):
    """Write an INT8 or FP16 variant of MODEL's ONNX file, kept only when its accuracy on the full test
    split (through the runtime) is within 0.5 points of the fp32 file's."""
    from pathlib import Path

    from edgecls.export.precision import make_variant
    from edgecls.locations import find_onnx
    from edgecls.registry import get_spec

    get_spec(model)
    source = Path(onnx_file) if onnx_file else find_onnx(model, artifacts)
    make_variant(model, precision, source, Path(artifacts or RUNS) / model, data_dir, calibration)


provider_option = choice_option(
    "--provider",
    ["auto", "cpu", "cuda", "tensorrt", "openvino"],  # runtime.engine.PROVIDERS (a test holds them equal)
    "auto",
    "Engine: ONNX Runtime on the cpu, cuda or tensorrt (a GPU; fails if it cannot run; auto says what it took), "
    "or openvino (Intel's runtime on the same file; needs edgecls[openvino]).",
)
precision_option = choice_option(
    "--precision",
    ["fp32", "bf16", "fp16", "int8", "auto"],  # runtime.engine.PRECISION_CHOICES (a test holds them equal)
    "fp32",
    "What the engine computes in. fp32 answers like the trained model; bf16 (openvino, CPUs with AMX or "
    "AVX512-BF16), fp16 (cuda/tensorrt, or openvino with AVX512-FP16) and int8 (model.int8.onnx, cpu or "
    "openvino) are held to 0.5 points of accuracy; auto: the fastest configuration on this machine that passes, "
    "measured once and cached.",
)


@main.command(
    "infer",
    epilog="Exit codes: 0 every file classified; 1 some files skipped (unreadable or not "
    "images, reported on stderr and marked in the output); 2 nothing run (bad "
    "paths or options, missing or unusable model).",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model", default=None, metavar="NAME", help="Use <artifacts>/<NAME>/model.onnx.")
@click.option("--onnx", "onnx_file", type=click.Path(), default=None, help="An ONNX file made by edgecls export.")
@provider_option
@precision_option
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per ONNX Runtime run.")
@click.option("--top-k", type=int, default=1, show_default=True, help="Labels shown per image.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "jsonl", "parquet"]),
    default=None,
    help="[table; parquet with --engine ray] jsonl: one JSON object per line (like csv, resumable). "
    "parquet (--engine ray only) adds each image's probability vector.",
)
@click.option(
    "--output",
    type=click.Path(),
    default=None,
    help="Write the results here instead of stdout: they stream into FILE.partial, renamed to FILE when "
    "every file is done.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted --output FILE (its FILE.partial; csv or jsonl).")
@click.option(
    "--workers",
    default=None,
    metavar="N|auto",
    callback=lambda ctx, param, value: _workers(value),
    help="Processes decoding images ahead of the model; 0 decodes in the main process [auto: "
    "min(4, cores) processes when the first batch took over 1 ms per image and the rest would take "
    "over 1 s to decode (big photos), else none]. A folder under 4 batches decodes in the main process.",
)
@click.option(
    "--draft/--no-draft",
    default=True,
    show_default=True,
    help="Decode JPEGs much larger than the model's input at 1/2, 1/4 or 1/8 scale (libjpeg), then resize.",
)
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads [one per core].")
@click.option(
    "--strict-input",
    is_flag=True,
    help="Stop (exit 2) at the first image that does not fit the model: colour for a grey model, grey for a "
    "colour one, or a size far from its input [default: warn once and go on].",
)
@click.option(
    "--artifacts",
    type=click.Path(),
    default=None,
    help=f"Use <artifacts>/<NAME>/model.onnx [default: {RUNS}/<NAME>/model.onnx when you exported one, "
    "else the shipped artifacts/<NAME>/model.onnx].",
)
@choice_option(
    "--engine",
    ["local", "ray"],
    "local",
    "ray: Ray Data with a pool of ORT actors, here or on the cluster at $RAY_ADDRESS (needs "
    "edgecls[ray]); --output names a new folder of Parquet or CSV files.",
)
@click.option(
    "--actors",
    type=int,
    default=None,
    help="--engine ray: actors, each one ORT session [cluster CPUs / --cpus-per-actor].",
)
@click.option(
    "--cpus-per-actor",
    type=int,
    default=1,
    show_default=True,
    help="--engine ray: CPUs reserved per actor, and its ORT threads.",
)
@cli_errors(nothing_run=True, interrupted=None)
def infer_cmd(
    paths,
    model,
    onnx_file,
    provider,
    precision,
    batch_size,
    top_k,
    fmt,
    output,
    resume,
    workers,
    draft,
    threads,
    artifacts,
    engine,
    actors,
    cpus_per_actor,
    strict_input,
):
    """Classify image files and folders (recursed) with ONNX Runtime only."""
    from edgecls.locations import find_onnx
    from edgecls.registry import get_spec
    from edgecls.runtime.infer import infer

    if (model is None) == (onnx_file is None):
        raise UsageError("give exactly one of --model NAME or --onnx FILE")
    if model is not None:
        get_spec(model)
        onnx_file = str(find_onnx(model, artifacts))
    if engine == "ray" and strict_input:
        raise UsageError("--strict-input is for the local engine; --engine ray classifies every file as it is")
    if engine == "ray" and precision != "fp32":
        raise UsageError(f"--precision {precision} is for the local engine; --engine ray runs fp32")
    if engine != "ray" and precision == "auto":
        from .choose import resolve

        provider, precision = resolve(onnx_file, provider, precision, threads, batch_size, say=_to_stderr)
    if engine == "ray":
        code = _infer_ray(
            paths,
            onnx_file,
            provider,
            batch_size,
            top_k,
            fmt,
            output,
            resume,
            workers,
            threads,
            actors,
            cpus_per_actor,
            draft,
        )
    else:
        if fmt == "parquet" or actors is not None:
            raise UsageError("--format parquet and --actors go with --engine ray")
        code = infer(
            list(paths),
            onnx_file,
            provider,
            batch_size,
            top_k,
            fmt or "table",
            output,
            threads,
            workers=workers,
            draft=draft,
            resume=resume,
            strict_input=strict_input,
            precision=precision,
        )
    sys.exit(code)


def _to_stderr(line: str) -> None:
    click.echo(line, err=True)  # infer's stdout is its results


def _workers(value: str | None) -> int | None:
    """--workers: a count, or auto (None: infer decides after timing its first batch)."""
    if value is None or value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number nor auto") from None


def _infer_ray(
    paths, onnx_file, provider, batch_size, top_k, fmt, output, resume, workers, threads, actors, cpus_per_actor, draft
) -> int:
    from edgecls.scale.ray_infer import infer_ray

    if not output:
        raise UsageError("--engine ray needs --output DIR (a new folder for the result files)")
    if resume or workers is not None or threads is not None:
        raise UsageError(
            "--resume, --workers and --threads are for the local engine; with --engine ray use "
            "--actors and --cpus-per-actor"
        )
    return infer_ray(
        list(paths), onnx_file, output, provider, batch_size, top_k, fmt or "parquet", actors, cpus_per_actor, draft
    )


@main.command("evaluate")
@model_option
@provider_option
@precision_option
@data_dir_option
@click.option("--limit", type=int, default=None, help="Evaluate N evenly spaced test images [all].")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Test images per run, on both sides.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads [one per core].")
@artifacts_option
@cli_errors()
@needs_training_extra
def evaluate_cmd(model, **options):
    """Accuracy and logit parity of the ONNX model (ONNX Runtime) against the PyTorch checkpoint on the
    real test split; writes parity.json and exits non-zero when the parity bar is missed."""
    from .evaluate import evaluate

    evaluate(model, **options)  # the options are named as evaluate's keywords


@main.command("bench")
@click.option(
    "--model",
    "model",
    default="all",
    show_default=True,
    metavar="NAME|all",
    help=f"Registered model or all: {', '.join(model_names())}.",
)
@choice_option(
    "--provider",
    ["cpu", "cuda", "tensorrt", "openvino"],
    "cpu",
    "Where both sides run: eager PyTorch on this device (the GPU for cuda and tensorrt), the ONNX side on this engine.",
)
@precision_option
@click.option("--batch-sizes", default="1,8,64,256", show_default=True, help="Comma-separated batch sizes.")
@click.option("--threads", type=int, default=None, help="Threads for both PyTorch and ONNX Runtime [torch's default].")
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Measuring time per model, batch and side.")
@click.option(
    "--e2e-images",
    type=int,
    default=None,
    help="CIFAR-10 test JPEGs for the end-to-end run (with cnn) [all 10,000]; 0 skips it.",
)
@data_dir_option
@click.option(
    "--artifacts",
    type=click.Path(),
    default=None,
    help=f"Take models from <artifacts>/<NAME>/ [default: {RUNS}/<NAME>/ when exported there, else the "
    "shipped artifacts/<NAME>/].",
)
@click.option(
    "--out", type=click.Path(), default=f"{RUNS}/bench", show_default=True, help="Folder for bench.json and bench.png."
)
@click.option(
    "--peers",
    is_flag=True,
    help="Also time OpenVINO (its default precision, and fp32) in the same rounds, give each row the fastest "
    "configuration edgecls offers, and measure accuracies on the full test split (needs edgecls[openvino]).",
)
@cli_errors()
@needs_training_extra
def bench_cmd(model, provider, precision, batch_sizes, threads, seconds, e2e_images, data_dir, artifacts, out, peers):
    """Latency and throughput of eager PyTorch against ONNX Runtime per model and batch size, and the
    end-to-end `edgecls infer` rate on CIFAR-10 JPEGs against an ImageFolder + DataLoader baseline."""
    from .bench import bench, parse_batch_sizes

    bench(
        model,
        provider=provider,
        batch_sizes=parse_batch_sizes(batch_sizes),
        threads=threads,
        artifacts=artifacts,
        seconds=seconds,
        e2e_images=e2e_images,
        data_dir=data_dir,
        out=out,
        peers=peers,
        precision=precision,
    )


@main.command(
    "serve",
    epilog="Ctrl-C or SIGTERM stops it gracefully: no new connections or RPCs, the requests in flight are "
    "answered (up to --shutdown-timeout), then exit code 0. Exit code 2: nothing served (bad options, "
    "address in use, missing or unusable model).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME",
    help="Serve this model (repeatable), from runs/<NAME>/ when you exported one, else the shipped file. "
    "Neither --model nor --onnx: every shipped model.",
)
@click.option(
    "--onnx",
    "onnx_files",
    multiple=True,
    type=click.Path(),
    metavar="FILE",
    help="Serve an ONNX file made by edgecls export (repeatable), under the model name in its metadata.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; the server has no authentication, so keep it local or behind a proxy.",
)
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port to listen on (0: any free one).")
@provider_option
@precision_option
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads per model [one per core].")
@click.option(
    "--max-batch",
    type=int,
    default=64,
    show_default=True,
    help="Most rows in one ONNX Runtime run, and in one request.",
)
@click.option(
    "--max-delay-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="How long a batch may wait for more requests (only when others are arriving). 0: run what is "
    "queued at once; requests that arrive during a run form the next batch (fastest in our benchmark).",
)
@click.option(
    "--dynamic-batching/--no-dynamic-batching",
    default=True,
    show_default=True,
    help="Gather concurrent requests into one run (off: one run per request, in arrival order).",
)
@click.option(
    "--max-body-mb", type=float, default=16.0, show_default=True, help="Largest request body accepted (413 above)."
)
@click.option("--artifacts", type=click.Path(), default=None, help="Take --model files from <artifacts>/<NAME>/.")
@click.option(
    "--strict-input",
    is_flag=True,
    help="Refuse (400) classify uploads that do not fit the model (colour for a grey model, grey for a colour "
    "one, a size far from its input) [default: answer, and log a warning once].",
)
@click.option(
    "--reject-nonfinite",
    is_flag=True,
    help="Refuse (400) tensors holding NaN or infinities [default: run them, as Triton does].",
)
@click.option(
    "--max-image-pixels",
    type=int,
    default=16_000_000,
    show_default=True,
    help="Classify refuses (400) image files over this many pixels, before decoding them; JPEGs decode at a "
    "reduced scale. Bounds the memory one upload can take.",
)
@click.option(
    "--decode-workers",
    type=int,
    default=2,
    show_default=True,
    help="Image files decoded at once across all classify requests (the rest wait their turn).",
)
@click.option(
    "--grpc-port",
    type=int,
    default=None,
    help="Also serve KServe v2 over gRPC (Triton's GRPCInferenceService) on this port (0: any free one); "
    "needs edgecls[grpc].",
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds the requests in flight get to finish after Ctrl-C or SIGTERM.",
)
@cli_errors(nothing_run=True, log_to_stderr=True, interrupted=None)
def serve_cmd(models, onnx_files, **options):
    """Serve models with the KServe v2 protocol that Triton speaks, over HTTP (and gRPC with --grpc-port):
    tritonclient and perf_analyzer work unchanged, with model config, statistics and model control
    (load/unload). Also POST /v2/models/<name>/classify for image files."""
    from edgecls.serve import serve

    from .choose import resolve

    def choose(path):  # --precision auto, per model file, at the server's largest batch
        return resolve(path, options["provider"], "auto", options["threads"], options["max_batch"])

    serve(list(models), list(onnx_files), **options, choose=choose)  # the options are named as serve's keywords


@main.command(
    "web", epilog="Exit code 2: nothing served (bad options, address in use, missing model or onnxruntime-web)."
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME",
    help="Offer this model (repeatable), the file `edgecls infer --model` uses [every shipped model].",
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on; keep it local or behind a proxy."
)
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port to listen on (0: any free one).")
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Instead of serving, write the page, onnxruntime-web and the models into this new folder.",
)
@click.option("--artifacts", type=click.Path(), default=None, help="Take --model files from <artifacts>/<NAME>/.")
@cli_errors(nothing_run=True, log_to_stderr=lambda kwargs: not kwargs["out"], interrupted=None)
def web_cmd(models, host, port, out, artifacts):
    """The browser page: the models run on the visitor's machine with onnxruntime-web (wasm, or WebGPU
    where the browser has it); served with the cross-origin isolation headers its threads need."""
    from edgecls.locations import model_sources
    from edgecls.web import build_site, serve_web

    sources = model_sources(list(models), None, artifacts)
    if out:
        build_site(out, sources)
    else:
        serve_web(sources, host, port)


@main.command("triton")
@click.argument("out_dir", metavar="DIR", type=click.Path())
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME",
    help="Model to write (repeatable) [every shipped model]; the ONNX file `edgecls infer --model` uses.",
)
@click.option("--max-batch", type=int, default=64, show_default=True, help="max_batch_size in config.pbtxt.")
@click.option(
    "--max-delay-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="dynamic_batching max_queue_delay_microseconds, in ms (Triton's default is 0 too).",
)
@click.option("--instances", type=int, default=1, show_default=True, help="instance_group count.")
@choice_option(
    "--kind",
    ["auto", "cpu", "gpu"],
    "auto",
    "instance_group kind (auto: GPU where Triton has one); gpu also takes the graph form CUDA runs "
    "(model.fused.onnx where export wrote one).",
)
@click.option("--artifacts", type=click.Path(), default=None, help="Take models from <artifacts>/<NAME>/.")
@cli_errors(nothing_run=True, interrupted=None)
def triton_cmd(out_dir, models, max_batch, max_delay_ms, instances, kind, artifacts):
    """Write a Triton Inference Server model repository (config.pbtxt, 1/model.onnx, labels.txt per model)."""
    from edgecls.locations import model_sources
    from edgecls.serve import write_repository

    write_repository(out_dir, model_sources(list(models), None, artifacts), max_batch, max_delay_ms, instances, kind)


if __name__ == "__main__":
    main()
