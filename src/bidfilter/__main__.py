"""``python -m bidfilter``: the same as the ``bidfilter`` command."""

import sys

from bidfilter.cli import main

sys.exit(main())
