#!/bin/sh
# The SGX EPC cgroup selftest, written for this project in plain sh after what the
# kernel's tools/testing/selftests/sgx/run_epc_cg_selftests.sh (V14-V17) does
# (reference section 6).  It knows nothing of the emulator: it works on
# /sys/fs/cgroup and runs test_sgx, so it runs unchanged on a kernel with the series
# or, inside `unshare -m`, over `epc-playground mount` bound on /sys/fs/cgroup.
#
# Exit status: 0 every case gave the expected outcome, 1 one did not, 4 skipped.
#
# Environment:
#   TEST_SGX     the test binary (default: test_sgx on PATH; the kernel's is ./test_sgx)
CG_ROOT=/sys/fs/cgroup
TEST_ROOT_CG=sgx_kselftest
SMALL_PARENT=$TEST_ROOT_CG/sgx_test_small_parent
SMALL=$SMALL_PARENT/sgx_test_small
LARGE=$TEST_ROOT_CG/sgx_test_large
LARGER=$TEST_ROOT_CG/sgx_test_larger
HERE=$(cd "$(dirname "$0")" && pwd)
TEST_SGX=${TEST_SGX:-test_sgx}
TEST_CMD="$TEST_SGX -t unclobbered_vdso_oversubscribed"

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: SGX cgroup tests need root privileges."
    exit 4
fi
if [ ! -f "$CG_ROOT/cgroup.controllers" ]; then
    echo "SKIP: SGX cgroup tests require v2 cgroups."
    exit 4
fi
if [ -d "$CG_ROOT/$TEST_ROOT_CG" ]; then
    echo "SKIP: Please clean up $CG_ROOT/$TEST_ROOT_CG."
    exit 4
fi

cleanup() {
    sleep 2
    for cg in $LARGE $SMALL $LARGER $SMALL_PARENT $TEST_ROOT_CG; do
        rmdir "$CG_ROOT/$cg"
    done
}

fail() {  # MESSAGE: report, clean up, exit 1
    echo "FAIL: $1"
    cleanup
    exit 1
}

# start_jobs CGROUP N: N test_sgx jobs in CGROUP in the background, back to back; their
# pids in $pids
start_jobs() {
    pids=""
    i=0
    while [ "$i" -lt "$2" ]; do
        sh "$HERE/ash_cgexec.sh" "$1" $TEST_CMD >/dev/null 2>&1 &
        pids="$pids $!"
        i=$((i + 1))
    done
}

# wait_jobs [IGNORED_PID]: wait for every job; counts in $passed and $failed
wait_jobs() {
    passed=0
    failed=0
    for pid in $pids; do
        if wait "$pid"; then
            passed=$((passed + 1))
        elif [ "$pid" != "$1" ]; then
            failed=$((failed + 1))
        fi
    done
}

random_below() {  # N: a random number in 0..N-1
    echo $(($(od -An -N2 -tu2 /dev/urandom) % $1))
}

for cg in $TEST_ROOT_CG $SMALL_PARENT $SMALL $LARGE $LARGER; do
    mkdir "$CG_ROOT/$cg" || { echo "FAIL: Failed creating cgroups."; exit 1; }
done
for cg in "" /$TEST_ROOT_CG; do
    echo "+misc" > "$CG_ROOT$cg/cgroup.subtree_control" || fail "Failed enabling the misc controller."
    echo "+memory" > "$CG_ROOT$cg/cgroup.subtree_control" || fail "Failed enabling the memory controller."
done
echo "+misc" > "$CG_ROOT/$SMALL_PARENT/cgroup.subtree_control" || fail "Failed enabling the misc controller."

CAPACITY=$(awk '$1 == "sgx_epc" { print $2 }' "$CG_ROOT/misc.capacity")
SMALL_LIMIT=$((CAPACITY / 512))  # below the VA pages and SECS of one capacity-sized enclave
LARGE_LIMIT=$((SMALL_LIMIT * 4))  # one such enclave fits, four at once do not
LARGER_LIMIT=$CAPACITY
echo "# Setting up limits: capacity $CAPACITY, small $SMALL_LIMIT, large $LARGE_LIMIT, larger $LARGER_LIMIT."
if ! { echo "sgx_epc $SMALL_LIMIT" > "$CG_ROOT/$SMALL_PARENT/misc.max" &&
       echo "sgx_epc $LARGE_LIMIT" > "$CG_ROOT/$LARGE/misc.max" &&
       echo "sgx_epc $LARGER_LIMIT" > "$CG_ROOT/$LARGER/misc.max"; } 2>/dev/null; then
    echo "# Failed setting up misc limits for sgx_epc."
    echo "SKIP: Kernel does not support SGX cgroup."
    cleanup
    exit 4
fi

echo "# Start unclobbered_vdso_oversubscribed with small EPC limit, expecting failure..."
if sh "$HERE/ash_cgexec.sh" $SMALL $TEST_CMD >/dev/null 2>&1; then
    fail "Fail on small EPC limit, not expecting any test passes."
fi
echo "# Test failed as expected."
echo "PASS: small EPC limit test."

echo "# Start 4 concurrent unclobbered_vdso_oversubscribed tests with large EPC limit, expecting at least one success...."
start_jobs $LARGE 4
wait_jobs
[ "$passed" -ge 1 ] || fail "Failed on large EPC limit positive testing, no test passes."
echo "PASS: large EPC limit positive testing."

echo "# Start 5 concurrent unclobbered_vdso_oversubscribed tests with large EPC limit, expecting at least one failure...."
start_jobs $LARGE 5
wait_jobs
[ "$failed" -ge 1 ] || fail "Failed on large EPC limit negative testing, no test fails."
echo "PASS: large EPC limit negative testing."

echo "# Start 8 concurrent unclobbered_vdso_oversubscribed tests with larger limit, expecting no failure...."
start_jobs $LARGER 8
wait_jobs
[ "$failed" -eq 0 ] || fail "Failed on larger EPC limit, at least one test fails."
echo "PASS: larger EPC limit tests."

echo "# Start 8 concurrent unclobbered_vdso_oversubscribed tests with larger limit, randomly kill one, expecting no failure...."
start_jobs $LARGER 8
sleep $(($(random_below 5) + 1))
victim=$(echo $pids | cut -d' ' -f$(($(random_below 8) + 1)))
kill "$victim" 2>/dev/null && echo "# Killed job $victim."
wait_jobs "$victim"
[ "$failed" -eq 0 ] || fail "Failed on random killing, at least one test fails."
echo "PASS: larger EPC limit test with a process randomly killed."

# The kernel script also turns swap off here (swapoff -a, later swapon -a).  The emulated
# host keeps swapped EPC in backing store charged to the memory cgroup and has no swap
# device of its own, so there is nothing to turn off, and the real host's swap is not ours.
MEM_LIMIT=$((CAPACITY - 2 * LARGE_LIMIT))
echo "# Start 4 concurrent unclobbered_vdso_oversubscribed tests with large EPC limit and memory.max $MEM_LIMIT, expecting all to fail...."
echo "$MEM_LIMIT" > "$CG_ROOT/$LARGE/memory.max" || fail "Failed setting up memory controller."
start_jobs $LARGE 4
wait_jobs
[ "$passed" -eq 0 ] || fail "Failed on tests with memcontrol, some tests did not fail."
echo "PASS: large EPC limit tests with memcontrol."

sleep 2
usage=$(awk '$1 == "sgx_epc" { print $2 }' "$CG_ROOT/$TEST_ROOT_CG/misc.current")
# The kernel's script prints this FAIL but still exits 0 (reference section 6.7); here a
# leak fails the run, which is what a test of the emulator needs.
[ "$usage" = 0 ] || fail "Final usage is $usage, not 0."
echo "PASS: leakage check."
echo "PASS: ALL cgroup limit tests, cleanup cgroups..."
cleanup
echo "# Done SGX cgroup tests."
