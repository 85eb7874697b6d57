"""Helpers shared by the test suite, the benchmarks and the demo: real processes on loopback."""
