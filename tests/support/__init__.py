"""Helpers shared by the tests: a real broker subprocess and real clients."""
