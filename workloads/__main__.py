"""``python -m workloads enclave|vm ...``: one workload process; its command line is workloads/cli.py."""

import sys

from workloads.cli import main

sys.exit(main())
