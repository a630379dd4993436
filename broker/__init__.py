"""Greenfly: an MQTT broker on gevent. See docs/architecture.md for the map of the package."""

__version__ = "0.1.0"
