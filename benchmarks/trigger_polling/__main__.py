"""``python -m benchmarks.trigger_polling``: run the benchmark (see ``benchmarks/README.md``)."""

from __future__ import annotations

import sys

from benchmarks.trigger_polling.cli import main

sys.exit(main())
