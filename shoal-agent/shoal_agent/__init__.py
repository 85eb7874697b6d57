"""Shoal agent: announces a Squid cache to the Shoal server over AMQP."""

__version__ = "2.0.0"
