"""``python -m fastconv.perf bench --quick`` / ``python -m fastconv.perf report A.json B.json``."""
import sys

from .cli import main

sys.exit(main())
