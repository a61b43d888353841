#!/usr/bin/env bash
# Build the compiled core with AddressSanitizer + UndefinedBehaviorSanitizer (gcc) and run the
# test suite under it. Any sanitizer report fails the run.
#
#   tools/sanitize.sh                  # -fsanitize=address,undefined,float-cast-overflow,
#                                      # shipped Cython directives
#   tools/sanitize.sh --debug-checks   # the same, plus Cython bounds/wraparound checks
#                                      # (-DFUSEDMLP_DEBUG_CHECKS=ON)
#   tools/sanitize.sh --all            # both modes, one after the other
#   tools/sanitize.sh -- -k softmax    # extra arguments after -- go to pytest
#
# Exit status: 0 clean; 1 a sanitizer report or a crash (the log excerpt is printed);
# 3 no sanitizer report but some tests failed (listed).
#
# Everything lives outside the work tree: a private virtual environment (not the developer's
# Python, whose editable install is left alone) and one build directory per mode, so a rerun
# after a change to csrc/ only recompiles. Takes a few minutes the first time (creating the
# environment), then about the time of the tests (ASan makes them ~2-3x slower).
#
# Environment: FUSEDMLP_SANITIZE_DIR (default /tmp/fusedmlp-sanitize) holds the venv, the
# build directories and the logs; PYTHON (default python3) creates the venv.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${FUSEDMLP_SANITIZE_DIR:-/tmp/fusedmlp-sanitize}"
PYTHON="${PYTHON:-python3}"
# The whole suite: every test file drives the compiled core somewhere (kernels, layers, the
# model, fit, the estimators, the refusal matrix, threads). test_installed.py skips itself.
TESTS=("$REPO/tests")

modes=(plain)
pytest_extra=()
while (($#)); do
    case "$1" in
        --debug-checks) modes=(checks) ;;
        --all) modes=(plain checks) ;;
        --) shift; pytest_extra=("$@"); break ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

command -v gcc >/dev/null || { echo "sanitize.sh needs gcc" >&2; exit 2; }
LIBASAN="$(gcc -print-file-name=libasan.so)"
LIBUBSAN="$(gcc -print-file-name=libubsan.so)"
[[ -f "$LIBASAN" && -f "$LIBUBSAN" ]] || {
    echo "gcc's libasan/libubsan not found (apt-get install libgcc-12-dev)" >&2; exit 2; }

mkdir -p "$WORK"
VENV="$WORK/venv"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV"
    # The build backend and the test dependencies; the project is built without isolation so
    # that the sanitizer flags reach the compiler through this environment's cmake.
    "$VENV/bin/python" -m pip install -q "scikit-build-core>=0.10" "cython>=3.0" \
        "cython-cmake>=0.2" cmake ninja numpy scipy pytest pytest-benchmark hypothesis \
        threadpoolctl scipy-openblas32 scikit-learn 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
fi

# (RelWithDebInfo adds -O2 -g: optimised code, as shipped, with line numbers in reports)
# float-cast-overflow is not part of gcc's "undefined" group: a double too large for the
# integer it is cast to (e.g. a step count of 1e300 into unsigned long long) is UB too.
SANITIZERS="address,undefined,float-cast-overflow"
SAN_FLAGS="-fsanitize=$SANITIZERS -fno-omit-frame-pointer -fno-sanitize-recover=undefined,float-cast-overflow"
status=0
for mode in "${modes[@]}"; do
    checks=OFF
    [[ "$mode" == checks ]] && checks=ON
    build_dir="$WORK/build-$mode"
    log="$WORK/pytest-$mode.log"
    echo "== [$mode] building with $SAN_FLAGS, FUSEDMLP_DEBUG_CHECKS=$checks"
    # The two modes share one venv: each (re)installs its own build before its tests.
    "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall \
        -Cbuild-dir="$build_dir" \
        -Ccmake.build-type=RelWithDebInfo \
        -Ccmake.define.CMAKE_C_FLAGS="$SAN_FLAGS" \
        -Ccmake.define.CMAKE_MODULE_LINKER_FLAGS="-fsanitize=$SANITIZERS" \
        -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="-fsanitize=$SANITIZERS" \
        -Ccmake.define.FUSEDMLP_DEBUG_CHECKS="$checks" \
        "$REPO"
    # Prove the build really is instrumented before trusting a clean run.
    for module in _kernels _network; do
        so="$(ls "$VENV"/lib/python3*/site-packages/fusedmlp/"$module".*.so)"
        symbols="$(nm -D "$so")"
        grep -q "__asan_report" <<<"$symbols" || { echo "$so lacks ASan" >&2; exit 1; }
        grep -q "__ubsan_handle" <<<"$symbols" || { echo "$so lacks UBSan" >&2; exit 1; }
    done

    # ... and that a real overflow is reported: the raw kernel (the Python layer's checks
    # bypassed) writes 4000 results into a 2000-element buffer.
    canary="$(cd "$WORK" && LD_PRELOAD="$LIBASAN" ASAN_OPTIONS=detect_leaks=0 \
        "$VENV/bin/python" -c '
import numpy as np
from fusedmlp import _kernels
_kernels.activation(np.ones(4000), np.empty(2000), 1)
' 2>&1 || true)"
    grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" <<<"$canary" || {
        echo "the canary overflow was not reported: the sanitizer is not active" >&2
        echo "$canary" | tail -20 >&2; exit 1; }
    echo "== [$mode] canary: a deliberate heap overflow in a kernel is reported"

    # ... and a float-to-integer cast overflow: a raw hyper-parameter array with a step count
    # of 1e300, which fusedmlp.load and the optimisers refuse, fed straight to the kernel.
    canary="$(cd "$WORK" && LD_PRELOAD="$LIBASAN:$LIBUBSAN" ASAN_OPTIONS=detect_leaks=0 \
        UBSAN_OPTIONS=halt_on_error=1 "$VENV/bin/python" -c '
import numpy as np
from fusedmlp import _kernels
hyper = np.zeros(8); hyper[0] = 0.1; hyper[2] = 0.9; hyper[3] = 0.999; hyper[4] = 1e-8
hyper[6] = 1e300
p = np.zeros(4); _kernels.optimizer_update(2, hyper, p, np.ones(4), np.zeros(4), np.zeros(4), 2)
' 2>&1 || true)"
    grep -q "runtime error:.*outside the range of representable values" <<<"$canary" || {
        echo "the canary float-cast overflow was not reported: float-cast-overflow is off" >&2
        echo "$canary" | tail -20 >&2; exit 1; }
    echo "== [$mode] canary: a deliberate float-to-integer overflow in a kernel is reported"

    echo "== [$mode] running tests/ under ASan+UBSan (log: $log)"
    start=$SECONDS
    # Run from outside the work tree so the sanitized install, not src/, is imported; the
    # tests directory goes on sys.path for its reference modules.
    set +e
    (cd "$WORK" && \
     LD_PRELOAD="$LIBASAN:$LIBUBSAN" \
     ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1" \
     UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
     PYTHONPATH="$REPO/tests" PYTHONFAULTHANDLER=1 \
     "$VENV/bin/python" -m pytest "${TESTS[@]}" --import-mode=importlib \
         -p no:cacheprovider --rootdir="$REPO" -q -W ignore::DeprecationWarning \
         "${pytest_extra[@]}" >"$log" 2>&1)
    rc=$?
    set -e
    elapsed=$((SECONDS - start))
    asan_reports=$(grep -c "ERROR: AddressSanitizer" "$log" || true)
    ubsan_reports=$(grep -c "runtime error:" "$log" || true)
    summary=$(grep -E "^[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s" "$log" | tail -1)
    echo "== [$mode] pytest exit $rc in ${elapsed}s: ${summary:-no pytest summary (crashed?)}"
    echo "== [$mode] AddressSanitizer reports: $asan_reports, UBSan runtime errors: $ubsan_reports"
    if ((asan_reports + ubsan_reports)); then
        grep -E -A25 "ERROR: AddressSanitizer|runtime error:" "$log" | head -80
        status=1
    elif [[ -z "$summary" ]]; then
        echo "== [$mode] pytest died without a summary:"; tail -40 "$log"
        status=1
    elif ((rc != 0)); then
        # Failing tests with no sanitizer report: listed, but they are not memory errors.
        grep -E "^(FAILED|ERROR) " "$log" | sed 's/ - .*//' | head -40
        ((status)) || status=3
    fi
done
exit $status
