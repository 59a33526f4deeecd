"""The Textual TUI (the only part of the project that imports textual)."""
