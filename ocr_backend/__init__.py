"""Everything that turns page images into markdown: sources, rendering, engines, cleaning."""

import sys

# PyMuPDF 2 imports its optional companions whenever it is imported: the layout analyser (which loads an
# ONNX model and starts a worker pool) and pymupdf4llm (which imports onnxruntime): 0.4 s of every
# command's start-up (measured). bookocr uses neither (they back Page.get_layout and pymupdf.to_markdown),
# so they are kept out unless the host program loaded PyMuPDF first.
if "pymupdf" not in sys.modules:
    for _optional in ("pymupdf.layout", "pymupdf4llm"):
        sys.modules.setdefault(_optional, None)  # type: ignore[arg-type]
