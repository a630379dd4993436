"""`python -m broker` and the `greenfly` command (its console script calls `main` here)."""

import sys


def main() -> int:
    # First of all: the process re-executes itself on glibc's allocator (server/memory.py says
    # why), and whatever it had imported by then would be imported twice.
    from .server.memory import use_system_allocator

    use_system_allocator()
    from .cli import main as command_line

    return command_line()


if __name__ == "__main__":
    sys.exit(main())
