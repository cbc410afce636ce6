"""``python -m benchmarks`` = ``framebus bench``."""

import sys

from benchmarks.cli import main

sys.exit(main())
