"""Helpers that tests and benches share (fixtures, a temporary PostgreSQL, the browser harness)."""
