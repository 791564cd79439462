"""Serve a web folder on localhost, cross-origin isolated (COOP + COEP), so WebAssembly threads work.

Any static host serves the folder; without these two headers the page runs on one thread.
"""
from __future__ import annotations

import errno
import functools
import http.server
import threading
from pathlib import Path

from ..errors import UserError

# Cross-origin isolation: SharedArrayBuffer, hence onnxruntime-web's WebAssembly threads
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",  # a rebuilt folder is reloaded, not taken from the browser's cache
}
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
         ".json": "application/json", ".onnx": "application/octet-stream", ".txt": "text/plain; charset=utf-8"}


class ServeError(UserError, OSError):
    """The server cannot start (port in use, address not available)."""


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def end_headers(self):
        for key, value in HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format, *args):  # quiet: the address on stdout is what the user reads
        pass


class WebServer:
    """A threaded HTTP server for ``folder`` on ``host:port`` (port 0: any free one)."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 8000):
        self.folder = Path(folder)
        handler = functools.partial(_Handler, directory=str(self.folder))
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(f"port {port} on {host} is in use: pick another with --port N "
                                 "(--port 0 takes any free one)") from None
            raise ServeError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> "WebServer":
        """Serve on a background thread (tests, benchmarks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
