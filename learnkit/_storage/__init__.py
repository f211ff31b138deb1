"""Storage: the protocol callers use, the writer, the SQLite backend, schema, rollups."""
