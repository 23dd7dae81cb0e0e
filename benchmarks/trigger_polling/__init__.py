"""
Benchmark: N concurrent ``GetImageDiffusionTrigger.run()`` generators on one event loop.

The triggerer runs every trigger as a task on one event loop, so what a poll costs there (CPU,
memory, connections) decides how many diffusions one triggerer can wait for. This benchmark
measures it against the emulator, over TLS, each run in a fresh client process, next to two
references run the same way (``pollers``). Its ``polling`` phase compares the three modes at
several N; its ``start`` phase measures what a fresh triggerer pays to start each trigger and
what each poll costs after that (``start_cost``). Usage, from the repository root::

    python -m benchmarks.trigger_polling --n 100 1000 5000 --repeats 3 --interval 2 --latency 6

One module per concern: ``cli`` (the command line and the report), ``runner`` (one measured run),
``client`` (the measured process), ``pollers`` (the modes), ``logs`` (where log records go),
``emulator`` (the emulator process), ``results`` and ``start_cost`` (each phase's numbers).
See ``benchmarks/README.md`` for what each number means.
"""
