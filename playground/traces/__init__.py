"""The bundled page-access traces (``*.trace`` beside this module; README.md says how each was made)."""
