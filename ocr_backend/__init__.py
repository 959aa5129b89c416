"""Everything that turns page images into markdown: sources, rendering, engines, cleaning."""
