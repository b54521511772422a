"""Deployment (`edgecls.serve`): `edgecls serve` (KServe v2 over HTTP, dynamic batching) and `edgecls triton`
(a Triton model repository). Built on `edgecls.runtime`; like it, it never imports torch."""

from .server import serve
from .triton import write_repository

__all__ = ["serve", "write_repository"]
