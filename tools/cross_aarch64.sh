#!/usr/bin/env bash
# Cross-compile every C kernel family CMakeLists.txt builds for AArch64 (the NEON elementwise
# variant and its dispatcher, the CPU probe, the NEON small_gemm kernel and its entry, the
# portable bf16_gemm entry, the header-only dropout, l1, fpenv and pool) with the C checks in tests/c/, statically, and run them under
# qemu-aarch64-static (a static binary needs no binfmt registration and no sysroot).
# Installs gcc-aarch64-linux-gnu and qemu-user-static with apt-get when missing (as root).
# Usage: tools/cross_aarch64.sh [OUT_DIR]   exit status non-zero on any failed check.
#
# The units and their flags: the "arm link" lines of tests/c/units.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
cc=aarch64-linux-gnu-gcc
qemu=qemu-aarch64-static
if ! command -v "$cc" >/dev/null || ! command -v "$qemu" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static >/dev/null
  else
    echo "cross_aarch64: need $cc and $qemu (apt-get install gcc-aarch64-linux-gnu qemu-user-static)" >&2
    exit 2
  fi
fi
flags=(-O2 -std=c11 -D_POSIX_C_SOURCE=200809L -fno-math-errno -fno-trapping-math -ffp-contract=off
       -Wall -Wextra -Werror -Wno-unused-function -I "$root/csrc")
# every AArch64 unit the C checks link, with the flags CMakeLists.txt compiles it with: the
# "arm link" lines of tests/c/units.txt (the one list tests/test_c_kernels.py and
# tools/portability_check.sh read too)
objects=()
while read -r arch use src defs; do
  [ "$arch $use" = "arm link" ] || continue
  obj="$out/${src%.c}.o"
  "$cc" "${flags[@]}" $defs -c "$root/csrc/kernels/$src" -o "$obj"
  objects+=("$obj")
done < <(grep -vE '^[[:space:]]*(#|$)' "$root/tests/c/units.txt")
status=0
for check in elementwise_check kernels_check; do
  "$cc" "${flags[@]}" -DFM_HAVE_NEON -static "$root/tests/c/$check.c" "${objects[@]}" \
    -o "$out/$check" -lm -lpthread
  start=$(date +%s%N)
  # FUSEDMLP_ISA names an x86 variant when the suite runs under one (tools/variants.sh): the
  # aarch64 build has only neon, so the checks run with it unset.
  if ! env -u FUSEDMLP_ISA "$qemu" "$out/$check" > "$out/$check.txt"; then status=1; fi
  end=$(date +%s%N)
  grep -v '^ok ' "$out/$check.txt" || true
  echo "aarch64 $check under qemu: $(( (end - start) / 1000000 )) ms"
done
exit $status
