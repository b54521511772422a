"""The request bodies of `edgecls serve` in its OpenAPI schema (/openapi.json): the KServe v2 infer body
(answered by a fast route, outside FastAPI, so described here), the classify upload and the repository
requests, which the handlers read themselves. Clients and schema-driven fuzzers (schemathesis, in the
tests) see what each route takes."""

from __future__ import annotations

ERROR = {
    "description": "Refused: a one-line reason",
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
        }
    },
}
TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "example": "input"},
        "datatype": {"type": "string", "example": "FP32"},
        "shape": {"type": "array", "items": {"type": "integer"}, "example": [1, 1, 28, 28]},
        "data": {"type": "array", "items": {}, "description": "numbers, flat or nested (or binary data after it)"},
        "parameters": {"type": "object", "description": "binary_data_size: the tensor follows as raw bytes"},
    },
}
INFER_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "description": "binary_data_output: logits as raw bytes"},
        "inputs": {"type": "array", "items": TENSOR, "minItems": 1, "maxItems": 1},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "example": "logits"},
                    "parameters": {"type": "object", "description": "classification: top k as labels"},
                },
            },
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": TENSOR},
    },
}
ERRORS = {str(code): ERROR for code in (400, 404, 413, 415)}


def infer_operation(version: bool) -> dict:
    params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if version:
        params.append({"name": "version", "in": "path", "required": True, "schema": {"type": "string"}})
    return {
        "summary": "KServe v2 inference (Triton's binary tensor and classification extensions)",
        "operationId": "infer" + ("_version" if version else ""),
        "parameters": params,
        "requestBody": {"required": True, "content": {"application/json": {"schema": INFER_BODY}}},
        "responses": {"200": {"description": "Logits", "content": {"application/json": {"schema": INFER_RESPONSE}}}}
        | ERRORS,
    }


CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            }
        },
    },
    "responses": ERRORS,
}
INDEX_BODY = {
    "requestBody": {
        "content": {"application/json": {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}
    },
    "responses": ERRORS,
}
LOAD_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object", "properties": {"parameters": {"type": "object"}}}}
        }
    },
    "responses": ERRORS,
}


def describe_fast_routes(app) -> None:
    """Add the infer routes to FastAPI's generated schema."""
    generate = app.openapi

    def openapi() -> dict:
        schema = generate()
        paths = schema["paths"]
        paths.setdefault("/v2/models/{name}/infer", {"post": infer_operation(False)})
        paths.setdefault("/v2/models/{name}/versions/{version}/infer", {"post": infer_operation(True)})
        return schema

    app.openapi = openapi
