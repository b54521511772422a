"""KServe v2 over gRPC: Triton's GRPCInferenceService, the service tritonclient.grpc and
`perf_analyzer -i grpc` call. The messages are the ones tritonclient's grpc package ships (generated
from Triton's .proto files), so the wire format is Triton's own, not a copy of it.

The service answers from the same Repository as HTTP: the same models, dynamic batchers and
statistics. It runs on the HTTP server's event loop (grpc.aio), so a gRPC request and an HTTP one can
share an ONNX Runtime batch. Refusals are gRPC status codes with the message HTTP would give:
INVALID_ARGUMENT (400), NOT_FOUND (404), RESOURCE_EXHAUSTED (413 and over-size messages),
UNAVAILABLE (a model or server that is not ready).
"""

from __future__ import annotations

import functools
import logging

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

import edgecls
from edgecls.metadata import OUTPUT_NAME

from .protocol import (
    EXTENSIONS,
    MODEL_VERSION,
    InferRequest,
    ProtocolError,
    check_classification,
    check_input,
    check_values,
    from_bytes,
    from_values,
    model_metadata,
    output_tensor,
    raw_contents,
)
from .repository import Repository, check_load_parameters

log = logging.getLogger(__name__)
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: ProtocolError) -> grpc.StatusCode:
    if exc.grpc_code:
        return grpc.StatusCode[exc.grpc_code]
    return CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)


def answering(method):
    """A ProtocolError becomes its status code with its message; anything else INTERNAL, logged."""

    @functools.wraps(method)
    async def wrapped(self, request, context):
        try:
            if request is None:
                raise ProtocolError(400, f"the request is not a valid {method.__name__}Request message")
            return await method(self, request, context)
        except ProtocolError as exc:
            await context.abort(status_of(exc), str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("unexpected error in gRPC %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal server error ({type(exc).__name__}); logged")

    return wrapped


def parse_request(request: pb.ModelInferRequest, input_shape, max_batch: int, reject_nonfinite: bool) -> InferRequest:
    """A ModelInferRequest for a model taking one float32 input: raw or typed contents, one output."""
    if len(request.inputs) != 1:
        raise ProtocolError(400, f"the request has {len(request.inputs)} inputs; this model takes one, named 'input'")
    tensor = request.inputs[0]
    shape = check_input(tensor.name, tensor.datatype, list(tensor.shape), input_shape, max_batch)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
            raise ProtocolError(400, "send the input once: one raw_input_contents entry, or typed contents, not both")
        array = from_bytes(request.raw_input_contents[0], shape)
    else:
        array = from_values(list(tensor.contents.fp32_contents), shape)
    k = 0
    if len(request.outputs) > 1:
        raise ProtocolError(400, f"the request asks for {len(request.outputs)} outputs; this model has one")
    for out in request.outputs:
        if out.name != OUTPUT_NAME:
            raise ProtocolError(400, f"unknown output {out.name!r}; this model has one output named '{OUTPUT_NAME}'")
        if "classification" in out.parameters:
            param = out.parameters["classification"]
            k = check_classification(getattr(param, param.WhichOneof("parameter_choice") or "int64_param"))
    return InferRequest(check_values(array, reject_nonfinite), request.id or None, True, k)


def infer_response(name: str, req: InferRequest, logits: np.ndarray, labels) -> pb.ModelInferResponse:
    datatype, shape, values = output_tensor(req, logits, labels)
    return pb.ModelInferResponse(
        model_name=name,
        model_version=MODEL_VERSION,
        id=req.request_id or "",
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=OUTPUT_NAME, datatype=datatype, shape=shape)],
        raw_output_contents=[raw_contents(datatype, values)],
    )


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, repo: Repository, reject_nonfinite: bool, state: dict):
        self.repo, self.reject_nonfinite, self.state = repo, reject_nonfinite, state

    @answering
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @answering
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.state["ready"])

    @answering
    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.repo.ready(request.name, request.version))

    @answering
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="edgecls", version=edgecls.__version__, extensions=EXTENSIONS)

    @answering
    async def ModelMetadata(self, request, context):
        info = self.repo.get(request.name, request.version).classifier.info
        meta = model_metadata(request.name, info.input_shape, len(info.class_names))
        return json_format.ParseDict(meta, pb.ModelMetadataResponse())

    @answering
    async def ModelConfig(self, request, context):
        config = self.repo.get(request.name, request.version).config
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, mc.ModelConfig()))

    @answering
    async def ModelStatistics(self, request, context):
        if request.name:
            models = {request.name: self.repo.get(request.name, request.version)}
        else:
            models = dict(sorted(self.repo.models.items()))
        stats = [m.batcher.stats.as_dict(n, MODEL_VERSION) for n, m in models.items()]
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    @answering
    async def RepositoryIndex(self, request, context):
        rows = self.repo.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    @answering
    async def RepositoryModelLoad(self, request, context):
        check_load_parameters(request.parameters)
        await self.repo.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @answering
    async def RepositoryModelUnload(self, request, context):
        check_load_parameters(request.parameters)
        await self.repo.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @answering
    async def ModelInfer(self, request, context):
        return await self._infer(request)

    async def ModelStreamInfer(self, request_iterator, context):
        """Triton's streaming form: one response per request, in order; an error is a message on the
        stream (its error_message), not the end of it."""
        async for request in request_iterator:
            try:
                if request is None:
                    raise ProtocolError(400, "the request is not a valid ModelInferRequest message")
                yield pb.ModelStreamInferResponse(infer_response=await self._infer(request))
            except ProtocolError as exc:
                yield pb.ModelStreamInferResponse(error_message=str(exc))

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        name = request.model_name
        m = self.repo.get(name, request.model_version)
        shape, labels = m.classifier.info.input_shape, m.classifier.class_names

        def parse():
            return parse_request(request, shape, self.repo.max_batch, self.reject_nonfinite)

        return await m.infer(parse, lambda req, logits: infer_response(name, req, logits, labels))


def _lenient(message_class):
    """A request deserializer that answers None for bytes that are not a valid message: the method then
    refuses it with INVALID_ARGUMENT (the generated one's DecodeError would reach the client as UNKNOWN)."""

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError:
            return None

    return parse


def _handlers(servicer: InferenceService) -> grpc.GenericRpcHandler:
    """The methods this service implements, registered as the generated add_..._to_server registers them
    (names and messages from Triton's service descriptor), with lenient deserializers. Methods it does not
    implement (shared memory, trace and log settings) are UNIMPLEMENTED."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        if method.name not in vars(InferenceService):
            continue
        make = grpc.stream_stream_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


async def start_grpc(repo: Repository, address: str, max_message: int, reject_nonfinite: bool, state: dict):
    """A started grpc.aio server for `repo` on `address` ("host:port"); `.port` is the port it bound."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
        ]
    )
    server.add_generic_rpc_handlers((_handlers(InferenceService(repo, reject_nonfinite, state)),))
    port = server.add_insecure_port(address)
    await server.start()
    server.port = port
    log.info(f"gRPC (KServe v2, Triton's GRPCInferenceService) on {address.rsplit(':', 1)[0]}:{port}")
    return server
