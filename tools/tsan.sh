#!/usr/bin/env bash
# Build the compiled core with ThreadSanitizer (gcc) and run the threaded tests under it.
#
#   tools/tsan.sh                      # tests/test_threads.py, test_concurrency.py, test_epoch.py,
#                                      # test_capi_threads.py
#   tools/tsan.sh -- -k fork           # extra arguments after -- go to pytest
#
# CPython is not built with TSan, so libtsan is preloaded into an ordinary interpreter and only
# fusedmlp's own code is instrumented: its worker pool (pool.h), the partitioned step and
# inference (_parallel.pxi) and every kernel. CPython's, NumPy's and OpenBLAS's memory accesses
# are not seen (tools/tsan.supp silences what TSan infers about them from their pthread calls).
# A race between two fusedmlp threads on memory fusedmlp writes is reported. Before trusting a
# clean run the script proves both: the build is instrumented, and a deliberate race (two Python
# threads running the raw compiled step of one network at once, bypassing MLP's lock) is
# reported. Under TSan the tests run ~50x slower (about 5 minutes).
#
# Exit status: 0 clean; 1 a TSan report (printed) or a broken setup; 3 no report, tests failed.
# Environment: FUSEDMLP_TSAN_DIR (default /tmp/fusedmlp-tsan) holds the build, the install and
# the logs; PYTHON (default: python3) must have the build and test dependencies installed
# (numpy, scipy, cython, scikit-build-core, cython-cmake, pytest, threadpoolctl,
# scipy-openblas32).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${FUSEDMLP_TSAN_DIR:-/tmp/fusedmlp-tsan}"
PYTHON="${PYTHON:-python3}"
TESTS=("$REPO/tests/test_threads.py" "$REPO/tests/test_concurrency.py" "$REPO/tests/test_epoch.py"
       "$REPO/tests/test_capi_threads.py")
pytest_extra=()
while (($#)); do
    case "$1" in
        --) shift; pytest_extra=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

LIBTSAN="$(gcc -print-file-name=libtsan.so)"
[[ -f "$LIBTSAN" ]] || { echo "gcc's libtsan not found (apt-get install libgcc-12-dev)" >&2; exit 2; }
mkdir -p "$WORK"
SITE="$WORK/site"
echo "== building with -fsanitize=thread into $SITE"
rm -rf "$SITE"
"$PYTHON" -m pip install -q --no-build-isolation --no-deps --target "$SITE" \
    -Cbuild-dir="$WORK/build" -Ccmake.build-type=RelWithDebInfo \
    -Ccmake.define.CMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
    -Ccmake.define.CMAKE_MODULE_LINKER_FLAGS="-fsanitize=thread" \
    -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
    "$REPO" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
for so in "$SITE"/fusedmlp/_network.*.so "$SITE"/fusedmlp/_kernels.*.so; do
    symbols="$(nm -D "$so")"
    grep -q "__tsan_" <<<"$symbols" || { echo "$so lacks TSan instrumentation" >&2; exit 1; }
done

# Kernel 6.x's 32-bit mmap randomisation breaks gcc 12's TSan: run without ASLR (setarch -R).
# die_after_fork=0: the fork test starts threads in the child, which TSan only warns about.
run() {
    (cd "$WORK" && PYTHONPATH="$SITE" LD_PRELOAD="$LIBTSAN" \
     TSAN_OPTIONS="suppressions=$REPO/tools/tsan.supp report_signal_unsafe=0 die_after_fork=0 halt_on_error=0 $1" \
     setarch -R "$PYTHON" "${@:2}")
}

canary="$(run "" -c '
import threading, numpy as np, fusedmlp
model = fusedmlp.MLP([64, 256, 10], n_threads=1)
X = np.ones((64, 64), np.float32); y = np.zeros(64, np.int64); hyper = np.zeros(model._no_update.size)
model.train_step(X, y, fusedmlp.SGD(0.1))
step = lambda: [model._net.train_step(X, y, None, None, 0.0, 0, hyper, None, None) for _ in range(20)]
threads = [threading.Thread(target=step) for _ in range(2)]
[t.start() for t in threads]; [t.join() for t in threads]
' 2>&1 || true)"
grep -q "WARNING: ThreadSanitizer: data race" <<<"$canary" || {
    echo "the canary race was not reported: TSan is not active" >&2; echo "$canary" | tail -20 >&2
    exit 1; }
echo "== canary: two threads running one network's step at once are reported as a data race"

log="$WORK/pytest.log"
echo "== running ${TESTS[*]##*/} under TSan (log: $log)"
set +e
run "" -m pytest "${TESTS[@]}" -q -p no:cacheprovider --rootdir="$REPO" "${pytest_extra[@]}" \
    >"$log" 2>&1
rc=$?
set -e
reports=$(grep -c "WARNING: ThreadSanitizer" "$log" || true)
summary=$(grep -E "(passed|failed).* in [0-9.]+s" "$log" | tail -1)
echo "== pytest exit $rc: ${summary:-no summary (crashed?)}; ThreadSanitizer reports: $reports"
if ((reports)); then
    grep -A30 "WARNING: ThreadSanitizer" "$log" | head -80
    exit 1
elif [[ -z "$summary" ]]; then
    tail -40 "$log"; exit 1
elif ((rc != 0)); then
    grep -E "^(FAILED|ERROR) " "$log" | head -40; exit 3
fi
