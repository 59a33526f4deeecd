"""The main screen's panels, one per module: each draws itself from a snapshot it is handed."""
