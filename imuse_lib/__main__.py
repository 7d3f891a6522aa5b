"""``python -m imuse_lib`` is the ``imuse`` command."""

import sys

from .cli import main

sys.exit(main())
