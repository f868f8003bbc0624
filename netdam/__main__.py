"""``python -m netdam`` is the ``netdam`` command."""

import sys

from netdam.cli import main

sys.exit(main())
