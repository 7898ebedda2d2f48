"""``python -m riverseal_demo``: the same as the ``riverseal-demo`` console script."""

import sys

from riverseal_demo.cli import main

sys.exit(main())
