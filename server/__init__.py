"""The local side of bookocr: corpus store, search, job runner, MCP server, CLI."""

import ocr_backend  # noqa: F401  (first, so that PyMuPDF's unused layout model is never loaded)
