"""Benchmarks of the core: each prints its figure beside a baseline measured in the same run, as a ratio.

Run from the repository root, e.g. ``.venv/bin/python bench/core_rate.py [--quick] [--json FILE]``.
"""
