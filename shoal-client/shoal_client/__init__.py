"""Shoal client: points CVMFS at the nearest Squid caches. Standard library only (Python 2.7+)."""

__version__ = "2.0.0"
