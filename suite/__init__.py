"""The benchmark suite: registry, harness, measurement, store and report.

Importing ``suite`` is cheap; the heavy parts are imported where they are used.
"""
