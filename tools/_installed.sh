# Sourced by tools/check_wheel.sh and tools/pythons.sh: what both do with a fresh venv.
# Expects REPO (the repository root) and the array pytest_extra (extra pytest arguments).

quiet_pip() {  # pip, minus its warnings about this machine's optional local indexes; pip's status
    "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
    return "${PIPESTATUS[0]}"
}

installed_suite() {  # PYTHON WORKDIR: the whole suite against the installed package; pytest's status
    local python="$1" run_dir rc
    # From an empty directory, so that src/ cannot be imported; tests/conftest.py puts the tests
    # directory on sys.path for the references, and pytest's rootdir is still the repository.
    run_dir="$(mktemp -d "$2/run.XXXXXX")"
    set +e
    (cd "$run_dir" && FUSEDMLP_EXPECT_INSTALLED=1 \
        "$python" -m pytest "$REPO/tests" --import-mode=importlib \
        -p no:cacheprovider "${pytest_extra[@]}")
    rc=$?
    set -e
    return $rc
}
