"""
The benchmarks (``benchmarks/README.md``), run as modules from the repository root.

``python -m benchmarks.trigger_polling`` and ``python -m benchmarks.deployment_check``: run so,
the repository root is on ``sys.path``, and they import ``harness`` and each other's helpers
(``benchmarks.report``) with no path set-up of their own. Never shipped in the wheel.
"""
