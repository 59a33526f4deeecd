"""What the kernel keeps and shows nowhere, as screens: a cgroup's LRU and the EPC frame map."""
