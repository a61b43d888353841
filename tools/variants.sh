#!/usr/bin/env bash
# The suite under every code path this CPU can run (docs/platforms.md, "Exactness claims and
# forced variants"): each FUSEDMLP_ISA variant of fusedmlp's own kernels the CPU supports,
# times fusedmlp's private OpenBLAS on its Haswell (AVX2) kernels and, where the CPU has
# AVX-512, its SkylakeX kernels (FUSEDMLP_OPENBLAS_CORETYPE, a test-only knob that leaves
# OPENBLAS_CORETYPE and every other OpenBLAS in the process alone).
#
#   bash tools/variants.sh                 # every combination, the numerics-sensitive files
#   bash tools/variants.sh tests/test_model.py -x    # other pytest arguments instead
#   VARIANTS_CORES="Nehalem Sandybridge" bash tools/variants.sh   # other cores too
#   VARIANTS_SKIP_DEFAULT=1 bash tools/variants.sh   # (.ci/run) not the combination the
#                                   # build runs with neither knob set: the suite just ran it
#
# Run it after installing fusedmlp (python -m pip install ".[test]"); it uses `python`.
# A variant the CPU cannot run is skipped with the reason printed, never failed. The files
# left out by default do not depend on the variant: they compile C themselves and run it per
# variant (test_c_*, test_portability), force variants in their own subprocesses (test_isa,
# test_blas_core), check text and types (test_docs, test_docstrings, test_structure,
# test_typing, test_installed) or the command line's parsing, data loading and output format
# (test_cli). Exits non-zero if any combination fails; prints a table.
#
# The installed extension modules must not change while it runs: a reinstall replaces the
# files (new inodes), and threadpoolctl then no longer finds the pool of the copy already
# loaded, so threadpool_limits stops reaching it and the thread-count tests fail
# (test_threads' test_auto_depends_on_the_shapes_alone and
# test_threadpool_limits_caps_auto_and_explicit_counts_are_obeyed did, in a run whose venv
# was rebuilt midway). Each combination is checked against the files it started with.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}

if [ "$#" -gt 0 ]; then
  args=("$@")
else
  args=(-q -p no:cacheprovider tests
        --ignore=tests/test_portability.py --ignore=tests/test_c_kernels.py
        --ignore=tests/test_c_elementwise.py --ignore=tests/test_isa.py
        --ignore=tests/test_blas_core.py --ignore=tests/test_docs.py
        --ignore=tests/test_docstrings.py --ignore=tests/test_structure.py
        --ignore=tests/test_typing.py --ignore=tests/test_installed.py
        --ignore=tests/test_cli.py)
fi

# What this CPU and build run, asked of fusedmlp itself with neither knob set.
probe=$(env -u FUSEDMLP_ISA -u FUSEDMLP_OPENBLAS_CORETYPE "$python" -c '
import os
import fusedmlp
config = fusedmlp.show_config(as_dict=True)
print(" ".join(config["elementwise_isa_supported"]))
print(config["blas"]["name"])
print(config["elementwise_isa"], config["blas"].get("core"))
print(os.path.dirname(fusedmlp.__file__))
') || { echo "variants: cannot import fusedmlp with $python" >&2; exit 2; }
supported=$(sed -n 1p <<<"$probe")
backend=$(sed -n 2p <<<"$probe")
default=$(sed -n 3p <<<"$probe")
package=$(sed -n 4p <<<"$probe")
# The installed extension modules, by inode and modification time.
modules() { stat -c '%n %i %Y' "$package"/*.so "$package"/*.pyd 2>/dev/null; }
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then avx512=yes; else avx512=no; fi

cores=${VARIANTS_CORES:-Haswell SkylakeX}
if [ "$backend" != openblas ]; then
  echo "variants: fusedmlp's BLAS backend is $backend, not openblas: FUSEDMLP_OPENBLAS_CORETYPE" \
       "does nothing there; running the ISA variants only"
  cores=default
  default="${default%% *} default"
fi

status=0
table=()
for isa in baseline avx2 avx512; do
  if ! grep -qw "$isa" <<<"$supported"; then
    echo "variants: skipping FUSEDMLP_ISA=$isa: this CPU or build runs only: $supported"
    continue
  fi
  for core in $cores; do
    case "$core" in
      SkylakeX|Cooperlake|SapphireRapids)
        if [ "$avx512" != yes ]; then
          echo "variants: skipping FUSEDMLP_OPENBLAS_CORETYPE=$core: the CPU has no AVX-512"
          continue
        fi ;;
    esac
    if [ "${VARIANTS_SKIP_DEFAULT:-}" = 1 ] && [ "$isa $core" = "$default" ]; then
      echo "variants: skipping FUSEDMLP_ISA=$isa FUSEDMLP_OPENBLAS_CORETYPE=$core: what this" \
           "build runs with neither knob set, which the suite just ran"
      continue
    fi
    env=(FUSEDMLP_ISA="$isa")
    [ "$core" != default ] && env+=(FUSEDMLP_OPENBLAS_CORETYPE="$core")
    echo "variants: ${env[*]} python -m pytest ${args[*]}"
    start=$(date +%s)
    before=$(modules)
    out=$(env "${env[@]}" "$python" -m pytest "${args[@]}" 2>&1)
    rc=$?
    summary=$(tail -n 1 <<<"$out")
    if [ "$(modules)" != "$before" ]; then
      rc=3
      summary="fusedmlp's extension modules in $package changed during this run (reinstalled?): its results do not count"
      echo "variants: $summary" >&2
    fi
    if [ $rc -ne 0 ]; then
      status=1
      grep -E '^(FAILED|ERROR)' <<<"$out" || tail -n 30 <<<"$out"
    fi
    table+=("$(printf '%-8s %-12s rc=%d %4ds  %s' "$isa" "$core" $rc $(( $(date +%s) - start )) "$summary")")
  done
done
echo "variants: FUSEDMLP_ISA  FUSEDMLP_OPENBLAS_CORETYPE  result"
printf '  %s\n' "${table[@]}"
exit $status
