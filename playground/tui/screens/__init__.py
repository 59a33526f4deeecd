"""Modal screens of the TUI, one per module: ``prompt`` (one value, checked before it closes),
``spawn`` (the workload form), ``signal`` (the signal chooser), ``scenario`` (the scenario
chooser) and ``help``.  Each has a footer of its own keys and says Enter and Esc.

Nothing is imported here: walking the packages (tests/test_tui.py) imports this package,
and that must not load textual.
"""
