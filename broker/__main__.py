"""`python -m broker` is the `greenfly` command."""

import sys

from .cli import main

sys.exit(main())
