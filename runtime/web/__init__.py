"""p2p.runtime.web: the model in a web page, translated in the browser by onnxruntime-web.

- ``ortweb``: the pinned onnxruntime-web files (fetched once from the npm registry, verified, cached);
- ``bundle``: a self-contained static folder from an exported ``.onnx`` (page, model, its contract
  as JSON, onnxruntime-web);
- ``serve``: a localhost server for such a folder (cross-origin isolated, so WebAssembly threads work);
- ``cli``: ``p2p-web``.

No torch here: building and serving the page need only the ONNX file.
"""
