"""Operator commands (deploy, probe, passwd, inspect): never the runtime, never gevent."""
