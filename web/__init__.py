"""The browser page (`edgecls.web`): the shipped models run on the visitor's machine with onnxruntime-web."""

from .server import build_site, serve_web

__all__ = ["build_site", "serve_web"]
