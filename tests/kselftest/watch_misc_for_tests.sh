#!/bin/sh
# Watch the misc files of the selftest's cgroups every second, as the kernel
# selftest's watch_misc_for_tests.sh does: misc.max, misc.current or misc.events.
# Usage: watch_misc_for_tests.sh max|current|events
if [ -z "$1" ]; then
    echo "No argument supplied, please provide 'max', 'current', or 'events'"
    exit 1
fi
watch -n 1 "find /sys/fs/cgroup -wholename '*/sgx_test*/misc.$1' -exec sh -c 'echo \"\$1:\"; cat \"\$1\"' _ {} \;"
