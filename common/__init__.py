"""What every layer shares and nothing else: size units and the host's page size and bounds (stdlib only)."""
