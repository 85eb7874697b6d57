"""Shoal server: tells worker nodes which Squid caches are nearest and least loaded."""

__version__ = "2.0.0"
