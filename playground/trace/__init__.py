"""`epc-playground trace`: recording a real program's page accesses (record.py) and summing one up (info.py)."""
