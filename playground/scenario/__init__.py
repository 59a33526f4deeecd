"""Headless scenarios (DESIGN.md section 6): the file format (model, load, expr), the runner, KTAP,
the ``run`` command, the bundled files, and the backends the runner drives (real and in-process)."""
