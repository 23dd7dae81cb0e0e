"""
Batch check: N prompts as one ``GetImageBatchOperator`` task against N mapped deferrable tasks.

On one real deployment (the ``harness``: api-server, scheduler with LocalExecutor, dag-processor,
triggerer; PostgreSQL), with one emulator latency and one poll interval, it runs
``benchmarks/dags/bench_batch.py`` (N = 2,000 prompts from a JSONL file, one task) and then
``benchmarks/dags/bench_mapped.py`` (N = 200 ``GetImageDiffusionOperator`` tasks, the
baseline of ``benchmarks.deployment_check``), and reports per path: Airflow CPU per generation
(every component's process tree), wall time, submissions, polls per generation, metadata-DB
growth per generation and the emulator's 429 answers (a rate limit is set for the batch, its
budgets below it); then the batch's ratios to the mapped baseline and the targets of issue 12.

One module per concern:

- :mod:`benchmarks.batch_check.cli` (``__main__``): the command line, the report, the JSON;
- :mod:`benchmarks.batch_check.run`: the deployment, the emulator, one phase per path, observed;
- :mod:`benchmarks.batch_check.results`: the numbers, the targets and the tables from what was
  observed (pure: the smoke test drives it with numbers).

Usage::

    python -m benchmarks.batch_check --check --json bench-batch.json

See ``benchmarks/README.md`` for what each number means and the figures measured here.
"""
