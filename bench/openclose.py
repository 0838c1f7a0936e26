# Benchmark load for `cargo xtask bench` (case 12): the open/close loop of bench/openclose.c in
# Python.
#
#   python3 openclose.py PAIRS [PATH]
#
# Sleeps 0.5 s first (so a tracer that launched it has found its interpreter), then opens and
# closes PATH (default /dev/null) PAIRS times with os.open/os.close and prints the time per pair,
# measured around the loop only; then opens PATH once more in the loop's function and keeps it
# (one leak, so the tracer's report shows which frames it named):
#
#   ns_per_pair 1812.3
#   pairs 50000
import os
import sys
import time


def loop(pairs, path):
    t0 = time.perf_counter_ns()
    for _ in range(pairs):
        os.close(os.open(path, os.O_RDONLY))
    t1 = time.perf_counter_ns()
    kept = os.open(path, os.O_RDONLY)  # the one leak
    return (t1 - t0) / pairs, kept


pairs = int(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else "/dev/null"
time.sleep(0.5)
ns, _ = loop(pairs, path)
print(f"ns_per_pair {ns:.1f}")
print(f"pairs {pairs}")
