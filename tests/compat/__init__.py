"""Conformance of the reference server with the two official Runware Python SDKs.

The SDKs run as subprocesses from their own virtual environments (``benchmarks.compat``), through
the driver scripts in ``drivers/``; each driver prints one JSON line saying what happened.
"""
