"""Helpers shared by the tests, the benchmarks and the demo (test images, leak checks)."""
