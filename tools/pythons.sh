#!/usr/bin/env bash
# The whole suite at both ends of the range fusedmlp claims: the oldest supported CPython with
# the oldest allowed dependency versions, and the newest CPython on the machine with the newest
# versions PyPI has.
#
#   tools/pythons.sh                 # oldest, then newest; a summary last
#   tools/pythons.sh oldest          # one of them (or: newest)
#   tools/pythons.sh newest -- -x    # arguments after -- go to pytest
#
# The Pythons are pyenv's ($PYENV_ROOT/versions/3.X.Y): "oldest" is the lowest 3.X.Y whose 3.X
# is requires-python's floor in pyproject.toml, "newest" the highest 3.X.Y there is.
# FUSEDMLP_OLDEST_PYTHON / FUSEDMLP_NEWEST_PYTHON (an interpreter's path) override them.
#
# Each run is rebuilt from scratch in $FUSEDMLP_PYTHONS_DIR/<oldest|newest> (default
# /tmp/fusedmlp-pythons):
#   1. a fresh venv of that Python (no system site-packages), its pip upgraded (pip is the
#      tool, not a dependency);
#   2. the wheel, built with build isolation as on a user's machine; for "oldest" the
#      isolated build environment gets tools/oldest-deps.txt as constraints too
#      (--build-constraint), so the extensions are compiled with the build requirements'
#      lower bounds (Cython, NumPy, SciPy, scikit-build-core);
#   3. the wheel with its test and plot extras installed: for "oldest" with
#      `-c tools/oldest-deps.txt` (every lower bound pyproject.toml states, pinned), for
#      "newest" with nothing pinned; `pip freeze` goes to deps.txt beside the log;
#   4. pytest on the repository's tests/ from a temporary directory with
#      --import-mode=importlib and FUSEDMLP_EXPECT_INSTALLED=1 (as tools/check_wheel.sh), so
#      the installed wheel is what runs.
# The exit status is 0 only if every run passed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${FUSEDMLP_PYTHONS_DIR:-/tmp/fusedmlp-pythons}"
CONSTRAINTS="$REPO/tools/oldest-deps.txt"
which=(oldest newest)
pytest_extra=()
while (($#)); do
    case "$1" in
        oldest|newest) which=("$1") ;;
        --) shift; pytest_extra=("$@"); break ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

# requires-python = ">=3.11" -> 11
floor_minor="$(sed -n 's/^requires-python *= *">= *3\.\([0-9]*\)".*/\1/p' "$REPO/pyproject.toml")"
[[ -n "$floor_minor" ]] || { echo "no requires-python = \">=3.N\" in pyproject.toml" >&2; exit 2; }

pyenv_pythons() {  # every pyenv CPython 3.X.Y with X >= the floor, oldest first
    local dir
    for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*; do
        [[ -x "$dir/bin/python3" ]] || continue
        local version="${dir##*/}"
        [[ "$version" =~ ^3\.([0-9]+)\.([0-9]+)$ ]] || continue    # no 3.13t, no 3.14.0rc1
        ((BASH_REMATCH[1] >= floor_minor)) && echo "$version $dir/bin/python3"
    done | sort -t. -k1,1n -k2,2n -k3,3n | cut -d' ' -f2
}

pick_python() {  # oldest|newest -> an interpreter's path
    local found
    if [[ "$1" == oldest ]]; then
        [[ -n "${FUSEDMLP_OLDEST_PYTHON:-}" ]] && { echo "$FUSEDMLP_OLDEST_PYTHON"; return; }
        found="$(pyenv_pythons | head -1)"
        # the floor itself, not merely the oldest Python found above it
        [[ -n "$found" ]] && [[ "$("$found" -c 'import sys; print(sys.version_info[1])')" == "$floor_minor" ]] \
            || { echo "no pyenv CPython 3.$floor_minor.x (requires-python's floor)" >&2; return 1; }
    else
        [[ -n "${FUSEDMLP_NEWEST_PYTHON:-}" ]] && { echo "$FUSEDMLP_NEWEST_PYTHON"; return; }
        found="$(pyenv_pythons | tail -1)"
        [[ -n "$found" ]] || { echo "no pyenv CPython >= 3.$floor_minor" >&2; return 1; }
    fi
    echo "$found"
}

# shellcheck source=tools/_installed.sh
. "$REPO/tools/_installed.sh"

run_one() {  # oldest|newest; prints the steps, returns pytest's status
    local kind="$1" dir="$WORK/$1" python venv t0=$SECONDS
    python="$(pick_python "$kind")" || return 1
    step() { echo "== $kind [$((SECONDS - t0))s] $*"; }
    rm -rf "$dir"; mkdir -p "$dir"
    step "$("$python" -VV | head -1) ($python)"

    venv="$dir/venv"
    "$python" -m venv "$venv"
    quiet_pip "$venv/bin/python" -m pip install -q --upgrade pip || return 1

    local pins=() build_pins=()
    if [[ "$kind" == oldest ]]; then
        pins=(-c "$CONSTRAINTS")
        build_pins=(--build-constraint "$CONSTRAINTS")     # pip >= 25.3
    fi
    step "pip wheel (build isolation${pins:+, build requirements at their lower bounds})"
    # -v: the log shows what the isolated build environment got (its "Successfully installed")
    if ! "$venv/bin/python" -m pip wheel -v --no-deps "${build_pins[@]}" -w "$dir/dist" "$REPO" \
            >"$dir/build.log" 2>&1; then
        tail -40 "$dir/build.log"; return 1
    fi
    local wheel=("$dir"/dist/fusedmlp-*.whl)
    step "built $(basename "${wheel[0]}") with $(grep -m1 -o 'Successfully installed.*' "$dir/build.log" \
        | cut -d' ' -f3- | tr ' ' '\n' | grep -iE '^(cython|numpy|scipy|scikit_build_core|scikit-build-core|cython-cmake|cython_cmake)-' | tr '\n' ' ')"

    step "install the wheel's test and plot extras${pins:+ with tools/oldest-deps.txt as constraints}"
    if ! quiet_pip "$venv/bin/python" -m pip install -q "${pins[@]}" "${wheel[0]}[test,plot]" \
            >"$dir/install.log"; then
        tail -40 "$dir/install.log"; return 1
    fi
    "$venv/bin/python" -m pip freeze --all >"$dir/deps.txt"
    step "installed: $(grep -iE '^(numpy|scipy|scikit-learn|cython|scipy-openblas32)==' "$dir/deps.txt" | tr '\n' ' ')"

    step "pytest against the installed wheel"
    local rc=0
    installed_suite "$venv/bin/python" "$dir" || rc=$?
    step "pytest exit $rc"
    return $rc
}

mkdir -p "$WORK"
summary=()
status=0
for kind in "${which[@]}"; do
    t=$SECONDS
    set +e
    run_one "$kind" 2>&1 | tee "$WORK/$kind.log"
    rc=${PIPESTATUS[0]}
    set -e
    ((rc == 0)) || status=1
    version="$(grep -m1 -oE 'Python 3\.[0-9]+\.[0-9]+' "$WORK/$kind.log" || echo "Python ?")"
    counts="$(grep -E '^=+ .*(passed|failed|error).* in ' "$WORK/$kind.log" | tail -1 | tr -d '=' \
        | sed 's/^ *//; s/ *$//' || true)"
    if ((rc == 0)); then verdict=ok; else verdict="FAILED (exit $rc)"; fi
    summary+=("$kind: $version; ${counts:-no pytest summary}; $((SECONDS - t)) s in all -> $verdict")
done
echo
echo "summary (logs and pip freeze in $WORK):"
printf '  %s\n' "${summary[@]}"
exit $status
