"""Command-line interface: thin shells around public functions (one module per verb)."""
