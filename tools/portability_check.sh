#!/usr/bin/env bash
# The C sources of csrc/ with toolchains other than the one that builds the wheel here, so that
# a GCC-only construct without a portable path (fm_platform.h, fm_atomic.h) fails loudly:
#
#   mingw    x86_64-w64-mingw32-gcc -std=c11 -pedantic -Werror: the _WIN32 paths (Win32
#            threads, fiber-local storage, _aligned_malloc, GetProcAddress), once per atomics
#            path: GNU builtins, Interlocked (FM_ATOMIC_FORCE_INTERLOCKED), C11 stdatomic
#   clang    -std=c11 -pedantic-errors -Werror, POSIX: the GNU and the C11 atomics path
#   gcc      -std=c11 -pedantic-errors -Werror, POSIX: the GNU and the C11 atomics path
#   aarch64  aarch64-linux-gnu-gcc, the same, over the AArch64 units (NEON variants)
#   msvc     no MSVC here: each unit is preprocessed as MSVC sees it (x64 and ARM64: _MSC_VER,
#            _WIN32, none of GCC's macros, system headers empty) and what is left of csrc/'s
#            own code must hold no GNU extension (__attribute__, __builtin_*, asm, pthread_*,
#            #pragma GCC, <cpuid.h> calls, ...)
#   wine     tests/c/kernels_check.c and elementwise_check.c linked with mingw (Windows
#            threads, TLS and the pool for real) and run under wine64, with the GNU and the
#            Interlocked atomics
#
# The units: every csrc/kernels/*.c with the defines and -m flags CMakeLists.txt gives it (a
# file not in FLAGS below gets none), every csrc/*.h on its own, and the C that the Cython
# sources carry verbatim (`cdef extern from *: """..."""`). fusedmlp.h needs Python.h: it is
# compiled by clang and gcc with this Python's headers, and only preprocessed for MSVC (there
# are no Windows Python headers here).
#
# Installs gcc-mingw-w64-x86-64, clang, gcc-aarch64-linux-gnu and wine64 with apt-get when missing (as root); exits 2
# when it cannot. Usage: tools/portability_check.sh [OUT_DIR]; non-zero exit on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
python=${PYTHON:-python3}
mingw=x86_64-w64-mingw32-gcc
wine=$(command -v wine64 || command -v wine || echo /usr/lib/wine/wine64)
start_all=$(date +%s%N)

missing=()
command -v "$mingw" >/dev/null || missing+=(gcc-mingw-w64-x86-64)
command -v clang >/dev/null || missing+=(clang)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
[ -x "$wine" ] || missing+=(wine64)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    wine=$(command -v wine64 || command -v wine || echo /usr/lib/wine/wine64)
  else
    echo "portability_check: need ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 2
  fi
fi

# --- the units -----------------------------------------------------------------------------
# tests/c/units.txt: every kernel unit with the flags CMakeLists.txt compiles it with, per
# architecture; here each file's lines become its sets of flags ("|" separates them; "" is
# the file without any), link and compile-only lines alike. A file not listed takes its flags
# from its name: *_avx512.c -mavx512f and *_avx2.c -mavx2 -mfma (x86-64 only), *_neon.c
# none (AArch64 only), anything else none (both).
declare -A X86_FLAGS=() ARM_FLAGS=()
while read -r arch _use name flags; do
  case $arch in
    x86) X86_FLAGS[$name]=${X86_FLAGS[$name]+"${X86_FLAGS[$name]}|"}$flags ;;
    arm) ARM_FLAGS[$name]=${ARM_FLAGS[$name]+"${ARM_FLAGS[$name]}|"}$flags ;;
  esac
done < <(grep -vE '^[[:space:]]*(#|$)' "$root/tests/c/units.txt")
mkdir -p "$out/units"
units=()        # x86-64: "path|flags"
arm_units=()    # AArch64
for src in "$root"/csrc/kernels/*.c; do
  name=$(basename "$src")
  for arch in x86 arm; do
    if [ $arch = x86 ] && [ -n "${X86_FLAGS[$name]+set}" ]; then sets=${X86_FLAGS[$name]}
    elif [ $arch = arm ] && [ -n "${ARM_FLAGS[$name]+set}" ]; then sets=${ARM_FLAGS[$name]}
    else
      case $arch:$name in
        x86:*_avx512.c) sets=-mavx512f ;;
        x86:*_avx2.c) sets="-mavx2 -mfma" ;;
        x86:*_neon.c | arm:*_avx512.c | arm:*_avx2.c) continue ;;
        *) sets= ;;
      esac
    fi
    IFS='|' read -r -a list <<< "$sets"
    [ ${#list[@]} -eq 0 ] && list=("")
    for flags in "${list[@]}"; do
      if [ $arch = x86 ]; then units+=("$src|$flags"); else arm_units+=("$src|$flags"); fi
    done
  done
done
for header in "$root"/csrc/*.h; do
  name=$(basename "$header")
  case $name in
    elementwise_impl.h) continue ;;      # not standalone: elementwise_kernels.c includes it
  esac
  # (a header of macros only would leave an empty translation unit, which ISO C forbids)
  printf '#include "%s"\ntypedef int fm_header_unit;\n' "$name" > "$out/units/${name%.h}_h.c"
  units+=("$out/units/${name%.h}_h.c|"); arm_units+=("$out/units/${name%.h}_h.c|")
done
# The verbatim C of the Cython sources, one unit per block.
"$python" - "$root/csrc" "$out/units" <<'EOF'
import re, sys, textwrap
from pathlib import Path
csrc, dest = Path(sys.argv[1]), Path(sys.argv[2])
for source in sorted([*csrc.glob("*.pyx"), *csrc.glob("*.pxd"), *csrc.glob("*.pxi")]):
    blocks = re.findall(r'cdef extern from \*[^:\n]*:\n(\s*)"""(.*?)"""', source.read_text(), re.S)
    for i, (_, text) in enumerate(blocks):
        name = f"{source.name.replace('.', '_')}_{i}.c"
        # Cython puts a block after Python.h and the C library headers; one of them keeps a
        # block of macros only from being an (ISO-forbidden) empty translation unit
        (dest / name).write_text(f"/* {source.name}: verbatim block {i} */\n#include <stddef.h>\n"
                                 + textwrap.dedent(text).strip("\n") + "\n")
EOF
for block in "$out"/units/*_pyx_*.c "$out"/units/*_pxd_*.c "$out"/units/*_pxi_*.c; do
  [ -e "$block" ] && units+=("$block|") && arm_units+=("$block|")
done

status=0
fail() { echo "FAIL $*"; status=1; }
ms() { echo $(( ($(date +%s%N) - start_all) / 1000000 )); }
py_include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')

# Jobs run in the background, PORTABILITY_JOBS (default: the cores) at a time; each leaves
# its output in $out/jobs/<id>.log and its exit status in <id>.rc, read by `report`.
mkdir -p "$out/jobs"; rm -f "$out"/jobs/*
jobs_max=${PORTABILITY_JOBS:-$(nproc)}
spawn() {   # id, command...
  local id=$1; shift
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  ( "$@" > "$out/jobs/$id.log" 2>&1; echo $? > "$out/jobs/$id.rc" ) &
}
report() {  # label, then "id|description" of its jobs: a FAIL line with the log for each failure
  local label=$1 n=0 bad=0 job; shift
  for job in "$@"; do
    n=$((n + 1))
    if [ "$(cat "$out/jobs/${job%%|*}.rc" 2>/dev/null)" != 0 ]; then
      bad=$((bad + 1)); fail "$label: ${job#*|}"; sed 's/^/    /' "$out/jobs/${job%%|*}.log" | head -20
    fi
  done
  echo "$label: $n units, $bad failed"
}
includes_atomics() {   # file: true when it includes fm_atomic.h, itself or through csrc/ headers
  local h
  for h in $(grep -oE '^\s*#\s*include\s*"[^"]+"' "$1" | sed -E 's/.*"(.*)"/\1/'); do
    [ "$h" = fm_atomic.h ] && return 0
    [ -f "$root/csrc/$h" ] && includes_atomics "$root/csrc/$h" && return 0
  done
  return 1
}

# --- compile passes: every unit, -fsyntax-only ---------------------------------------------
# The forced atomics paths only where they change something: units that include fm_atomic.h.
warn=(-Wall -Wextra -Wvla -Wno-unused-function -Werror)
posix=(-std=c11 -pedantic-errors -D_POSIX_C_SOURCE=200809L)
PASSES=(
  "mingw gnu-atomics|all|$mingw -std=c11 -pedantic"
  "mingw interlocked|atomics|$mingw -std=c11 -pedantic -DFM_ATOMIC_FORCE_INTERLOCKED"
  "mingw c11-atomics|atomics|$mingw -std=c11 -pedantic -DFM_ATOMIC_FORCE_C11"
  "clang gnu-atomics|all|clang ${posix[*]}"
  "clang c11-atomics|atomics|clang ${posix[*]} -DFM_ATOMIC_FORCE_C11"
  "gcc gnu-atomics|all|gcc ${posix[*]}"
  "gcc c11-atomics|atomics|gcc ${posix[*]} -DFM_ATOMIC_FORCE_C11"
  "aarch64 gnu-atomics|all|aarch64-linux-gnu-gcc ${posix[*]}"
  "aarch64 c11-atomics|atomics|aarch64-linux-gnu-gcc ${posix[*]} -DFM_ATOMIC_FORCE_C11"
)
declare -A pass_jobs=()
p=0
for pass in "${PASSES[@]}"; do
  label=${pass%%|*}; rest=${pass#*|}; which=${rest%%|*}; cc=${rest#*|}
  p=$((p + 1)); u=0; pass_jobs[$label]=
  if [ "$label" = "${label#aarch64}" ]; then pass_units=("${units[@]}"); else pass_units=("${arm_units[@]}"); fi
  for unit in "${pass_units[@]}"; do
    src=${unit%%|*}; flags=${unit#*|}; extra=(); u=$((u + 1))
    [ "$which" = all ] || includes_atomics "$src" || continue
    case $(basename "$src") in
      fusedmlp_h.c)                      # no Windows Python headers here
        [ "$label" = "${label#mingw}" ] || continue; extra=(-isystem "$py_include") ;;
      *_pyx_*.c | *_pxd_*.c | *_pxi_*.c)  # fragments: the module around them uses their statics
        extra=(-Wno-unused-variable) ;;
    esac
    # shellcheck disable=SC2086
    spawn "c$p-$u" $cc "${warn[@]}" -I "$root/csrc" "${extra[@]}" $flags -fsyntax-only "$src"
    pass_jobs[$label]+="c$p-$u|${src#"$root"/} $flags"$'\n'
  done
done

# --- objects for wine: the -O2 build, GNU and Interlocked atomics --------------------------
# Every kernels/ unit; the Interlocked objects only where the atomics are in.
opt=(-O2 -std=c11 -fno-math-errno -fno-trapping-math -ffp-contract=off -I "$root/csrc")
declare -A object=()
u=0
for unit in "${units[@]}"; do
  src=${unit%%|*}; flags=${unit#*|}; u=$((u + 1))
  [ "$(dirname "$src")" = "$root/csrc/kernels" ] || continue
  for atomics in gnu interlocked; do
    id=o$u-$atomics
    if [ $atomics = interlocked ] && ! includes_atomics "$src"; then
      object[$u-$atomics]=${object[$u-gnu]}; continue
    fi
    def=(); [ $atomics = interlocked ] && def=(-DFM_ATOMIC_FORCE_INTERLOCKED)
    # shellcheck disable=SC2086
    spawn "$id" "$mingw" "${opt[@]}" "${def[@]}" $flags -c "$src" -o "$out/jobs/$id.o"
    object[$u-$atomics]="$out/jobs/$id.o"
  done
done

# --- what MSVC sees ------------------------------------------------------------------------
# Every system header an empty file: only csrc/'s own code is left after preprocessing.
stubs="$out/msvc-stubs"
mkdir -p "$stubs"
grep -rhoE '#\s*include\s*<[^>]+>' "$root/csrc" "$out/units" | sed -E 's/.*<(.*)>/\1/' | sort -u |
  while read -r h; do mkdir -p "$stubs/$(dirname "$h")"; : > "$stubs/$h"; done
gnu_only='__attribute__|__builtin_[A-Za-z0-9_]+|__asm__|__asm\b|\basm\b|__typeof__|\btypeof\b|__extension__|__thread\b|__int128|\bpthread_[a-z_]+|#pragma GCC|__get_cpuid[a-z_]*|__cpuid_count|__sync_[a-z_]+|__atomic_[a-z_]+|__label__'
for arch in "x64:-D_M_X64 -D_M_AMD64 -D_WIN64" "arm64:-D_M_ARM64 -D_WIN64"; do
  n=0 bad=0
  if [ "${arch%%:*}" = x64 ]; then pass_units=("${units[@]}"); else pass_units=("${arm_units[@]}"); fi
  for unit in "${pass_units[@]}"; do
    src=${unit%%|*}; flags=${unit#*|}
    flags=$(echo "$flags" | sed -E 's/-m[a-z0-9]+//g')  # MSVC: /arch: flags define no macros we read
    n=$((n + 1))
    # shellcheck disable=SC2086
    if ! cpp -undef -nostdinc -std=c11 -I "$stubs" -I "$root/csrc" -D_MSC_VER=1930 -D_WIN32 \
         ${arch#*:} $flags "$src" -o "$out/msvc.i" 2> "$out/log.txt"; then
      bad=$((bad + 1)); fail "msvc-${arch%%:*} preprocess: ${src#"$root"/} $flags"; sed 's/^/    /' "$out/log.txt" | head
    elif grep -nE "$gnu_only" "$out/msvc.i" > "$out/log.txt"; then
      bad=$((bad + 1)); fail "msvc-${arch%%:*}: GNU-only code left in ${src#"$root"/} $flags"
      sed 's/^/    /' "$out/log.txt" | head
    fi
  done
  echo "msvc-${arch%%:*} view: $n units, $bad with GNU-only code ($(ms) ms)"
done

wait
echo "compiles done ($(ms) ms)"
for pass in "${PASSES[@]}"; do
  label=${pass%%|*}
  mapfile -t list <<< "${pass_jobs[$label]%$'\n'}"
  report "$label" "${list[@]}"
done

# --- run under wine ------------------------------------------------------------------------
# The units a Windows build compiles (CMakeLists.txt: no AVX-512 small_gemm/bf16 kernels on
# WIN32), and a second build with those kernels in, whose per-thread packing space takes
# fm_platform.h's fiber-local path.
export WINEDEBUG=-all
export WINEPREFIX=${WINEPREFIX:-$HOME/.wine-fusedmlp}
for build in windows windows+avx512; do
  for atomics in gnu interlocked; do
    label="wine $build $atomics-atomics"; dir="$out/wine-$build-$atomics"; mkdir -p "$dir"
    def=(); [ $atomics = interlocked ] && def=(-DFM_ATOMIC_FORCE_INTERLOCKED)
    objects=(); u=0
    for unit in "${units[@]}"; do
      src=${unit%%|*}; flags=${unit#*|}; u=$((u + 1))
      [ -n "${object[$u-$atomics]-}" ] || continue
      case "$(basename "$src"):$flags:$build" in
        small_gemm.c:?*:windows | bf16_gemm.c:?*:windows | *_avx512.c:*:windows | *_avx2.c:*:windows) continue ;;
        small_gemm.c::windows+avx512 | bf16_gemm.c::windows+avx512) continue ;;
      esac
      [ "$(cat "$out/jobs/o$u-$atomics.rc" 2>/dev/null || echo 0)" = 0 ] ||
        fail "$label: compile ${src#"$root"/} $flags: $(head -5 "$out/jobs/o$u-$atomics.log")"
      objects+=("${object[$u-$atomics]}")
    done
    for check in kernels_check elementwise_check; do
      if ! "$mingw" "${opt[@]}" "${def[@]}" -static "$root/tests/c/$check.c" "${objects[@]}" \
           -o "$dir/$check.exe" -lm > "$dir/$check.link" 2>&1; then
        fail "$label: link $check"; sed 's/^/    /' "$dir/$check.link" | head -10; continue
      fi
      if ! timeout 300 "$wine" "$dir/$check.exe" > "$dir/$check.txt" 2> "$dir/$check.err" ||
         ! tail -n 1 "$dir/$check.txt" | grep -q ' 0 failed'; then
        fail "$label: $check"; grep -v '^ok ' "$dir/$check.txt" | head -20; head -5 "$dir/$check.err"
      else
        echo "$label $check: $(tail -n 1 "$dir/$check.txt" | tr -d '\r') ($(ms) ms)"
      fi
    done
  done
done

echo "portability_check: $(ms) ms, $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
