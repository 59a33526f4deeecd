"""The hosts a scenario runs on: ``base`` is the contract the runner sees, ``real`` an engine process
and one OS process per workload, ``inproc`` the core in this process on a virtual clock."""
