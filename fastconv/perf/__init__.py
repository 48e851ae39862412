"""Benchmark suite definitions, machine ceilings, report generation (fastconv bench)."""
