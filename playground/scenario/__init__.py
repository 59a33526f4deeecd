"""Headless scenarios (docs/scenarios.md): the file format (model, load, expr), the runner, KTAP,
the ``run`` command, the bundled files, and the backends the runner drives (real and in-process)."""
