"""Everything that turns page images into markdown: sources, rendering, engines, cleaning."""

import sys

# PyMuPDF 2 imports its optional layout analyser whenever it is imported, and that loads an ONNX model
# and starts a worker pool: 0.3 s of every command's start-up. bookocr never calls it (it backs
# Page.get_layout), so it is kept out unless the host program loaded PyMuPDF first.
if "pymupdf" not in sys.modules:
    sys.modules.setdefault("pymupdf.layout", None)  # type: ignore[arg-type]
