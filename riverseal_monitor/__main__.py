"""``python -m riverseal_monitor``: the same as the ``riverseal-witness`` console script."""

import sys

from riverseal_monitor.cli import main

sys.exit(main())
