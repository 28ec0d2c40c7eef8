"""tests/registry/ on sys.path (pytest inserts a conftest's folder): the Hub tests' package `hub` (its loopback
server) is importable from the runner tests in tests/registry/bench/ too."""
