"""Layer A: Mosquitto-format password and ACL files, parsed and checked without I/O policy."""
