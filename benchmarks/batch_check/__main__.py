"""``python -m benchmarks.batch_check``: see :mod:`benchmarks.batch_check.cli`."""

from __future__ import annotations

import sys

from benchmarks.batch_check.cli import main

sys.exit(main())
