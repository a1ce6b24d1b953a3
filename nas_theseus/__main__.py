"""``python -m nas_theseus`` is the ``nas-theseus`` command."""

import sys

from .cli import main

sys.exit(main())
