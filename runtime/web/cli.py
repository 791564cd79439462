"""p2p-web: serve a model's web page on localhost (the model translates in the browser)."""
from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import click

from ..artifacts import default_model
from ..cli_errors import user_errors
from . import ortweb
from .bundle import WebFolderError, build_web_folder, is_web_folder
from .serve import WebServer

EXAMPLES = """
\b
Examples:
  p2p-web                                  # the newest model under ./runs (else the demo model)
  p2p-web runs/edges/model.onnx            # a model: its page, built in a temporary folder
  p2p-web runs/edges/web --port 8080       # a folder written by p2p-export RUN --web DIR
  p2p-web --fetch-runtime                  # download onnxruntime-web (once; ./install.sh does it)
\b
Open the printed address in a browser: draw, upload a picture or use the webcam; the model runs in
the page (WebGPU where the browser has it, else WebAssembly). Ctrl+C stops the server.
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_or_dir", required=False, type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; browsers allow the webcam only on "
                   "localhost or HTTPS).")
@click.option("--fetch-runtime", is_flag=True,
              help=f"Download onnxruntime-web {ortweb.VERSION} from the npm registry into the cache "
                   "(verified against its pinned sha512) and exit.")
def main(model_or_dir, port, host, fetch_runtime):
    """Serve the web page of MODEL_OR_DIR (a .onnx file, or a folder made by p2p-export --web)."""
    with user_errors():
        if fetch_runtime:
            folder = ortweb.fetch(log=lambda line: click.echo(line, err=True))
            click.echo(str(folder))
            return
        source = Path(model_or_dir) if model_or_dir is not None else default_model()
        with tempfile.TemporaryDirectory(prefix="p2p-web-") as tmp:
            if source.is_dir():
                if not is_web_folder(source):
                    raise WebFolderError(f"{source} is not a folder made by p2p-export --web (no model.json "
                                         "from p2p): pass the folder it wrote, or a .onnx file")
                folder = source
            else:
                folder = build_web_folder(source, Path(tmp) / "web", link=True)
            server = WebServer(folder, host, port)
            click.echo(f"serving {source} at {server.url}  (Ctrl+C stops)", err=True)
            click.echo(server.url)
            _stop_on_signals()
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                click.echo("stopped", err=True)
            finally:
                server.close()


def _stop_on_signals() -> None:
    """Ctrl+C and SIGTERM (docker stop) stop the server alike, also where the shell that started it set
    SIGINT to ignored (background jobs): Python installs no Ctrl+C handler then."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop)


if __name__ == "__main__":
    main()
