#!/bin/sh
# Run a command in a cgroup, as the kernel selftest's ash_cgexec.sh does: move this
# shell into CGROUP (a path under /sys/fs/cgroup) by writing 0, which means "the
# writer", to its cgroup.procs, then exec the command, which keeps this pid.
# Usage: ash_cgexec.sh CGROUP COMMAND [ARGS...]
if [ "$#" -lt 2 ]; then
    echo "Usage: $0 <cgroup> <command> [args...]"
    exit 1
fi
echo 0 > "/sys/fs/cgroup/$1/cgroup.procs" || exit 1
shift
exec "$@"
