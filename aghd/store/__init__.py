"""The store: all SQL lives in this package (one module per resource)."""
