"""The benchmark harness: a stub server, contender scripts, the runner and its report.

Run ``python -m benchmarks.harness --quick`` (about a minute) or without ``--quick`` (about six
minutes). See ``benchmarks/README.md``.
"""
