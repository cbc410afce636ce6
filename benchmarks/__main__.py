"""``python -m framebus_bench`` = ``framebus bench``."""

import sys

from framebus_bench.cli import main

sys.exit(main())
