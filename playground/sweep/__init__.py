"""Limit sweeps: a scenario run in process at each point of a range or a grid (``epc-playground sweep``)."""
