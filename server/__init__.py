"""The local side of bookocr: corpus store, search, job runner, MCP server, CLI."""
