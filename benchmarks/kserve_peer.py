#!/usr/bin/env python
"""The peer a user would pick instead of `edgecls serve`: a KServe Python model server (kserve's own
ModelServer, v2 protocol over HTTP and gRPC) answering with ONNX Runtime on the same ONNX files, the
way KServe's custom-model guide writes one. No dynamic batching: KServe's Python server has none.

Runs in its own environment (KServe pins its own web stack): benchmarks/serve.py creates it as
.venv-kserve (kserve==KSERVE_VERSION, onnxruntime and tritonclient[grpc] from PyPI) and starts this file
with it.

    .venv-kserve/bin/python benchmarks/kserve_peer.py --http-port 8080 --grpc-port 8081 \\
        --model cnn=artifacts/cnn/model.onnx --threads 1

KServe has no model-config endpoint, over HTTP or gRPC; perf_analyzer reads one, so both answer the
minimal Triton config (max_batch_size 0: requests carry the batch axis themselves; perf_analyzer is given
--shape). KServe binds 0.0.0.0 and [::]; here both listeners are held to 127.0.0.1 (benchmarks listen
locally only)."""

from __future__ import annotations

import argparse
import types
import uuid

import grpc
import grpc.aio
import kserve.model_server
import kserve.protocol.rest.server as kserve_rest
import numpy as np
import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

KSERVE_VERSION = "0.21.0"
ORT_TYPES = {"tensor(float)": "FP32"}


class OnnxModel(Model):
    def __init__(self, name: str, path: str, threads: int):
        super().__init__(name)
        self.path, self.threads = path, threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def _types(self, values) -> list[dict]:
        return [{"name": v.name, "datatype": ORT_TYPES[v.type], "shape": [-1, *v.shape[1:]]} for v in values]

    def get_input_types(self) -> list[dict]:
        return self._types(self.session.get_inputs())

    def get_output_types(self) -> list[dict]:
        return self._types(self.session.get_outputs())

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        (logits,) = self.session.run(None, {self.session.get_inputs()[0].name: x})
        out = InferOutput(name=self.session.get_outputs()[0].name, shape=list(logits.shape), datatype="FP32")
        out.set_data_from_numpy(logits, binary_data=payload.use_binary_outputs)
        return InferResponse(  # binary or JSON logits, as the request asks (KServe reads both from these)
            model_name=self.name,
            infer_outputs=[out],
            response_id=payload.id or str(uuid.uuid4()),
            from_grpc=payload.from_grpc,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def _triton_model_config_module():
    """tritonclient/grpc/model_config_pb2.py alone: importing the package would load service_pb2 too."""
    import importlib.util
    from pathlib import Path

    path = Path(importlib.util.find_spec("tritonclient").submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([n & 0x7F | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def _request_name(data: bytes) -> str:
    """ModelConfigRequest's field 1 (name), from its wire bytes."""
    from google.protobuf.internal.decoder import _DecodeVarint

    pos = 0
    while pos < len(data):
        key, pos = _DecodeVarint(data, pos)
        size, pos = _DecodeVarint(data, pos)
        if key == (1 << 3 | 2):
            return data[pos : pos + size].decode()
        pos += size
    return ""


def _config_response(config: bytes) -> bytes:
    """ModelConfigResponse{config = 1}: one length-delimited field."""
    return _varint(1 << 3 | 2) + _varint(len(config)) + config


def listen_locally(configs: dict[str, dict]) -> None:
    """KServe's REST server binds 0.0.0.0 and its gRPC server [::]; bind both to 127.0.0.1 instead. The
    gRPC server also gets Triton's ModelConfig method (a handler beside KServe's, for the same service)."""
    # Triton's ModelConfig message from tritonclient; its request and response wrappers are written by
    # hand, because tritonclient's service_pb2 and KServe's own v2 messages share the "inference" proto
    # package and cannot both be loaded into one process.
    from google.protobuf import json_format

    model_config_pb2 = _triton_model_config_module()

    async def model_config(request: str, context):
        config = json_format.ParseDict(configs[request], model_config_pb2.ModelConfig())
        return config.SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelConfig": grpc.unary_unary_rpc_method_handler(
                model_config, request_deserializer=_request_name, response_serializer=_config_response
            )
        },
    )

    class LocalConfig(uvicorn.Config):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "host": "127.0.0.1"})

    kserve_rest.uvicorn = types.SimpleNamespace(**{**vars(uvicorn), "Config": LocalConfig})
    add_port = grpc.aio._server.Server.add_insecure_port

    def add_local_port(self, address):
        self.add_generic_rpc_handlers((handler,))
        return add_port(self, address.replace("[::]", "127.0.0.1"))

    grpc.aio._server.Server.add_insecure_port = add_local_port


def triton_configs(models: list[OnnxModel]) -> dict[str, dict]:
    """The minimal Triton config of each model, which perf_analyzer asks for."""
    return {
        m.name: {
            "name": m.name,
            "platform": "onnxruntime_onnx",
            "max_batch_size": 0,
            "input": [
                {"name": i["name"], "data_type": "TYPE_FP32", "dims": [-1, *i["shape"][1:]]}
                for i in m.get_input_types()
            ],
            "output": [
                {"name": o["name"], "data_type": "TYPE_FP32", "dims": [-1, *o["shape"][1:]]}
                for o in m.get_output_types()
            ],
        }
        for m in models
    }


def add_config_route(configs: dict[str, dict]) -> None:
    async def config(name: str):
        return configs[name]

    kserve.model_server.app.add_api_route("/v2/models/{name}/config", config, methods=["GET"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FILE")
    parser.add_argument("--threads", type=int, default=1)
    args, _ = parser.parse_known_args()
    models = [OnnxModel(*spec.split("=", 1), args.threads) for spec in args.model]
    configs = triton_configs(models)
    listen_locally(configs)
    add_config_route(configs)
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1, enable_grpc=True).start(models)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
