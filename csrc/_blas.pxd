# The one file that knows BLAS.
#
# Backends. gemm calls through two function pointers (sgemm, dgemm: the Fortran interface, the
# same signature for every backend) that each module cimporting this file resolves once, at
# import, by calling load_blas():
#   "openblas"  a private instance of the scipy-openblas32 package's library (the OpenBLAS build
#               NumPy and SciPy ship), loaded by absolute path with RTLD_LOCAL, its symbols
#               prefixed scipy_. Its thread count is set to 1: fusedmlp's own worker pool
#               (pool.h) is the only parallelism, and NumPy's and SciPy's OpenBLAS instances,
#               with their own pools, are never touched.
#   "mkl"       Intel MKL's libmkl_rt from the `mkl` package (optional extra, x86 only), loaded
#               by absolute path. MKL has a per-thread setting: every thread fusedmlp computes
#               on sets mkl_set_num_threads_local(1) while it runs fusedmlp's code (blas_enter /
#               blas_leave) and restores the previous value.
#   "scipy"     scipy.linalg.cython_blas: always present, the fallback. Its OpenBLAS pool is
#               SciPy's (process-wide, threadpoolctl controls it); fusedmlp leaves it alone.
# FUSEDMLP_BLAS=openblas|mkl|scipy forces one (an unavailable one is an ImportError naming
# why); otherwise the first that loads of load_blas's order (MKL only on Intel CPUs). One
# more pointer, fm_gemm_bf16 (MKL's cblas_gemm_bf16bf16f32, NULL elsewhere), is resolved for
# a bfloat16 compute path; a further backend function is one more pointer of this kind.
#
# Layout. Our arrays are row-major: a row-major matrix is the column-major view of its
# transpose, so row-major C = op(A) @ op(B) is computed as the column-major
# C^T = op(B)^T @ op(A)^T -- the operands swap places, nothing is copied.

from cython cimport floating
from libc.stdint cimport uint16_t, uint32_t
from scipy.linalg cimport cython_blas

cdef extern from *:
    """
    #include <string.h>
    #if defined(_WIN32)
    #include <windows.h>
    static void *fm_dlopen(const char *path)
    {   /* the library's own directory first, for its dependencies */
        return (void *)LoadLibraryExA(path, NULL, LOAD_WITH_ALTERED_SEARCH_PATH);
    }
    static void *fm_dlsym(void *lib, const char *name)
    {   /* a function's address as dlsym gives it: ISO C has no cast from FARPROC to void * */
        FARPROC proc = lib ? GetProcAddress((HMODULE)lib, name) : NULL;
        void *address = NULL;
        if (proc != NULL) memcpy(&address, &proc, sizeof address);
        return address;
    }
    static const char *fm_dlerror(void) { return "LoadLibraryEx failed"; }
    #else
    #include <dlfcn.h>
    static void *fm_dlopen(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
    static void *fm_dlsym(void *lib, const char *name) { return lib ? dlsym(lib, name) : NULL; }
    static const char *fm_dlerror(void) { const char *e = dlerror(); return e ? e : "?"; }
    #endif
    typedef void (*fm_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *,
                                float *, int *, float *, float *, int *);
    typedef void (*fm_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *, int *,
                                double *, int *, double *, double *, int *);
    /* cblas_gemm_bf16bf16f32(layout, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta,
     * c, ldc) with uint16_t bfloat16 operands and float C */
    typedef void (*fm_gemm_bf16_fn)(int, int, int, int, int, int, float, const void *, int,
                                    const void *, int, float, float *, int);
    typedef int (*fm_int_int_fn)(int);
    typedef int (*fm_int_fn)(void);
    static fm_sgemm_fn fm_sgemm = NULL;
    static fm_dgemm_fn fm_dgemm = NULL;
    static fm_gemm_bf16_fn fm_gemm_bf16 = NULL;
    /* openblas: its process-wide count (kept at 1); mkl: the calling thread's count */
    static fm_int_int_fn fm_blas_set_threads = NULL;
    static fm_int_fn fm_blas_get_threads = NULL;
    static int fm_blas_per_thread = 0;           /* 1: fm_blas_set_threads is per thread */

    #include "cpu.h"
    static int fm_cpu_is_intel(void) { return (fm_cpu_features() & FM_CPU_INTEL) != 0; }
    static int fm_cpu_has_bf16(void)
    {
        return (fm_cpu_features() & (FM_CPU_AVX512BF16 | FM_CPU_AMX_BF16)) != 0;
    }
    """
    ctypedef void (*fm_sgemm_fn)(char*, char*, int*, int*, int*, float*, float*, int*,
                                 float*, int*, float*, float*, int*) nogil
    ctypedef void (*fm_dgemm_fn)(char*, char*, int*, int*, int*, double*, double*, int*,
                                 double*, int*, double*, double*, int*) nogil
    ctypedef void (*fm_gemm_bf16_fn)(int, int, int, int, int, int, float, const void*, int,
                                     const void*, int, float, float*, int) nogil
    ctypedef int (*fm_int_int_fn)(int) nogil
    ctypedef int (*fm_int_fn)() nogil
    fm_sgemm_fn fm_sgemm
    fm_dgemm_fn fm_dgemm
    fm_gemm_bf16_fn fm_gemm_bf16
    fm_int_int_fn fm_blas_set_threads
    fm_int_fn fm_blas_get_threads
    int fm_blas_per_thread
    void* fm_dlopen(const char* path)
    void* fm_dlsym(void* lib, const char* name)
    const char* fm_dlerror()
    int fm_cpu_has_bf16()
    int fm_cpu_is_intel()


cdef extern from "cpu.h" nogil:
    unsigned fm_cpu_features()
    unsigned fm_cpu_allowed()
    const char* fm_cpu_forced()
    unsigned FM_CPU_AVX2, FM_CPU_FMA, FM_CPU_AVX512F, FM_CPU_AVX512BW, FM_CPU_AVX512VL
    unsigned FM_CPU_AVX512BF16, FM_CPU_AMX_BF16, FM_CPU_NEON


cdef inline dict cpu_report(str small_gemm, bint bf16_kernel):
    """show_config's ``kernels`` entry, for the module that calls it: each family's variant
    ("blas" where BLAS computes the products), the usable CPU features (cpu.h) and
    FUSEDMLP_ISA as read."""
    cdef unsigned have = fm_cpu_features()
    cdef const char* forced = fm_cpu_forced()
    names = {"avx2": FM_CPU_AVX2, "fma": FM_CPU_FMA, "avx512f": FM_CPU_AVX512F,
             "avx512bw": FM_CPU_AVX512BW, "avx512vl": FM_CPU_AVX512VL,
             "avx512bf16": FM_CPU_AVX512BF16, "amx_bf16": FM_CPU_AMX_BF16, "neon": FM_CPU_NEON}
    return {"small_gemm": small_gemm,
            "bf16_gemm": "avx512bf16" if bf16_kernel else "portable",
            "cpu_features": [name for name, bit in names.items() if have & bit],
            "forced": forced.decode() if forced != NULL else None}


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] := alpha * op(A)[m, k] @ op(B)[k, n] + beta * C."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 0 or n == 0:
        return
    if floating is float:
        fm_sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
                 &beta, c, &ldc)
    else:
        fm_dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
                 &beta, c, &ldc)


cdef extern from "bf16_gemm.h" nogil:
    int fm_bf16_cpu()
    const char* fm_bf16_why_not()
    void fm_bf16_gemm(int trans_a, int trans_b, int m, int n, int k, const float* a, int lda,
                      const float* b, int ldb, float* c, int ldc)
    void fm_bf16_pack(int trans, int k, const float* b, int ldb, int p0, int p1, int j0, int j1,
                      uint32_t* dst, Py_ssize_t ps)
    void fm_bf16_gemm_packed(int trans_a, int m, int n, int k, const float* a, int lda,
                             const uint32_t* bp, Py_ssize_t ps, float* c, int ldc)
    const char* fm_bf16_amx_why_not()
    void fm_bf16_use_mkl(void* gemm, void* set_threads_local)
    int fm_bf16_mkl()
    void fm_bf16_convert(Py_ssize_t n, const float* src, uint16_t* dst)
    void fm_bf16_gemm_b16(int trans_a, int trans_b, int m, int n, int k, const float* a,
                          int lda, const uint16_t* b16, int ldb, float* c, int ldc)


cdef inline void gemm_bf16(bint trans_a, bint trans_b, int m, int n, int k, const float* a,
                           int lda, const float* b, int ldb, float* c, int ldc) noexcept nogil:
    """Row-major C[m, n] := bf16(op(A))[m, k] @ bf16(op(B))[k, n], summed in float32: the
    product of compute_dtype="bfloat16" models (csrc/bf16_gemm.h): fusedmlp's kernel, or
    MKL's cblas_gemm_bf16bf16f32 where _bf16_backend chose it (load_blas)."""
    fm_bf16_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)


cdef extern from "small_gemm.h" nogil:
    int fm_small_gemm_cpu()
    const char* fm_small_gemm_variant()
    int fm_small_gemm_step_rows()
    int fm_small_gemm(int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                      float* c, int ldc)


cdef inline void inference_gemm(int m, int n, int k, const floating* a, int lda,
                                const floating* b, int ldb, floating* c, int ldc,
                                int layer_width) noexcept nogil:
    """Row-major C[m, n] := A[m, k] @ B[k, n] for inference (a block of the columns of a
    layer layer_width wide): fusedmlp's own kernel (AVX-512, AVX2+FMA or NEON, small_gemm.h)
    for float32 layers of 32 or more units where the CPU has one (faster than OpenBLAS at
    every inference shape measured, docs/performance.md; narrower layers stay with BLAS,
    which was faster there), else gemm. Chosen by the layer, not the block, so that every block of a split
    product runs the same kernel: the same bits as the whole."""
    if floating is float:
        if layer_width >= 32 and fm_small_gemm(m, n, k, a, lda, b, ldb, c, ldc):
            return
    gemm(False, False, m, n, k, <floating>1, a, lda, b, ldb, <floating>0, c, ldc)


cdef inline bint step_forward_gemm(int m, int n, int k, const floating* a, int lda,
                                   const floating* b, int ldb, floating* c, int ldc,
                                   int layer_width) noexcept nogil:
    """The training step's forward product C[m, n] := A[m, k] @ B[k, n] (a block of rows or
    columns of a layer layer_width wide) with fusedmlp's own kernel where it is measured
    faster than BLAS: float32, layers of 32 or more units, blocks of at most
    fm_small_gemm_step_rows() rows (small_gemm.c). Returns whether it computed C (else the
    caller calls BLAS)."""
    if floating is float:
        if layer_width >= 32 and m <= fm_small_gemm_step_rows():
            return fm_small_gemm(m, n, k, a, lda, b, ldb, c, ldc)
    return False


cdef inline int blas_enter() noexcept nogil:
    """Make BLAS single-threaded for the calling thread; returns what blas_leave restores.

    mkl: the thread's own count (per thread). openblas: the private instance's count is put
    back to 1 should anyone (threadpoolctl lists and limits every OpenBLAS it finds) have
    changed it; nothing to restore."""
    if fm_blas_set_threads == NULL:
        return 0
    if fm_blas_per_thread:
        return fm_blas_set_threads(1)
    if fm_blas_get_threads() != 1:
        fm_blas_set_threads(1)
    return 0


cdef inline void blas_leave(int saved) noexcept nogil:
    if fm_blas_per_thread and fm_blas_set_threads != NULL:
        fm_blas_set_threads(saved)


cdef inline object _library_file(str name):
    """Absolute path of the backend's library inside its installed package, or raise
    ImportError saying what is missing."""
    import importlib.metadata, importlib.util, os, platform
    if name == "openblas":
        spec = importlib.util.find_spec("scipy_openblas32")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the scipy-openblas32 package is not installed "
                              "(pip install scipy-openblas32)")
        folder = os.path.join(list(spec.submodule_search_locations)[0], "lib")
        names = sorted([f for f in os.listdir(folder) if f.startswith("libscipy_openblas")
                        and (".so" in f or f.endswith((".dll", ".dylib")))])
        if not names:
            raise ImportError(f"no libscipy_openblas library in {folder}")
        return os.path.join(folder, names[0])
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        raise ImportError(f"MKL is x86 only; this machine is {platform.machine()}")
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("the mkl package is not installed (pip install fusedmlp[mkl])") from None
    for f in files:
        base = f.name.lower()
        if base.startswith(("libmkl_rt.so", "mkl_rt.")) or base == "libmkl_rt.dylib":
            return str(f.locate())
    raise ImportError("the mkl package holds no mkl_rt library")


cdef inline dict _open_library(str name):
    """dlopen the backend and resolve its pointers (into this module's copies).

    openblas: FUSEDMLP_OPENBLAS_CORETYPE=<core> (a test-only knob) makes the private instance
    run that OpenBLAS core's kernels (e.g. Haswell: AVX2, SkylakeX: AVX-512), and the result
    reports the core it runs ("core"); a name the instance does not then run is an
    ImportError, whichever backend was asked for."""
    import os
    global fm_sgemm, fm_dgemm, fm_gemm_bf16, fm_blas_set_threads, fm_blas_get_threads
    global fm_blas_per_thread
    cdef void* lib
    cdef char* (*get_config)() noexcept nogil
    cdef void (*mkl_version)(char*, int) noexcept nogil
    cdef char buf[256]
    path = _library_file(name)
    core = os.environ.get("FUSEDMLP_OPENBLAS_CORETYPE", "").strip() if name == "openblas" else ""
    if core:
        # Test-only (docs/platforms.md): OpenBLAS picks its kernels once, in the library's
        # load-time constructor, from OPENBLAS_CORETYPE. Set it for this dlopen only and put
        # the process's value (or its absence) back at once, so NumPy's and SciPy's OpenBLAS
        # and the environment the user sees are untouched.
        saved = os.environ.get("OPENBLAS_CORETYPE")
        os.environ["OPENBLAS_CORETYPE"] = core
    try:
        lib = fm_dlopen(path.encode())
    finally:
        if core:
            if saved is None:
                del os.environ["OPENBLAS_CORETYPE"]
            else:
                os.environ["OPENBLAS_CORETYPE"] = saved
    if lib == NULL:
        raise ImportError(f"cannot load {path}: {fm_dlerror().decode(errors='replace')}")
    prefix = "scipy_" if name == "openblas" else ""
    symbols = {s: <size_t>fm_dlsym(lib, (prefix + s).encode()) for s in
               (("sgemm_", "dgemm_", "openblas_set_num_threads", "openblas_get_num_threads",
                 "openblas_get_config", "openblas_get_corename") if name == "openblas" else
                ("sgemm_", "dgemm_", "MKL_Set_Num_Threads_Local", "MKL_Get_Max_Threads",
                 "MKL_Get_Version_String"))}
    missing = [prefix + s for s, address in symbols.items() if address == 0]
    if missing:
        raise ImportError(f"{path} lacks the symbols {', '.join(missing)}")
    fm_sgemm = <fm_sgemm_fn><void*><size_t>symbols["sgemm_"]
    fm_dgemm = <fm_dgemm_fn><void*><size_t>symbols["dgemm_"]
    if name == "openblas":
        fm_blas_set_threads = <fm_int_int_fn><void*><size_t>symbols["openblas_set_num_threads"]
        fm_blas_get_threads = <fm_int_fn><void*><size_t>symbols["openblas_get_num_threads"]
        fm_blas_per_thread = 0
        fm_blas_set_threads(1)
        get_config = <char* (*)() noexcept nogil><void*><size_t>symbols["openblas_get_config"]
        version = get_config().decode(errors="replace")
        get_config = <char* (*)() noexcept nogil><void*><size_t>symbols["openblas_get_corename"]
        running = get_config().decode(errors="replace")
        # OpenBLAS silently auto-detects for a name it does not know (and maps some names to
        # another core: Zen runs Haswell's kernels): the knob promises the core it names.
        if core and running.lower() != core.lower():
            raise ImportError(f"FUSEDMLP_OPENBLAS_CORETYPE={core!r}, but {path} runs the "
                              f"{running!r} core: OpenBLAS does not know that name, runs "
                              f"another core's kernels under it, or this CPU cannot run it "
                              f"(name a core as openblas_get_corename reports it, e.g. "
                              f"Haswell or SkylakeX)")
        return {"name": name, "version": version, "path": path, "core": running}
    else:
        fm_blas_set_threads = <fm_int_int_fn><void*><size_t>symbols["MKL_Set_Num_Threads_Local"]
        fm_blas_get_threads = <fm_int_fn><void*><size_t>symbols["MKL_Get_Max_Threads"]
        fm_blas_per_thread = 1
        fm_gemm_bf16 = <fm_gemm_bf16_fn>fm_dlsym(lib, b"cblas_gemm_bf16bf16f32")
        mkl_version = <void (*)(char*, int) noexcept nogil><void*><size_t>symbols["MKL_Get_Version_String"]
        mkl_version(buf, sizeof(buf))
        buf[sizeof(buf) - 1] = 0
        version = buf.decode(errors="replace").strip()
    return {"name": name, "version": version, "path": path, "core": None}


cdef inline dict _bf16_backend():
    """Choose the product of compute_dtype="bfloat16" for the calling module: MKL's
    cblas_gemm_bf16bf16f32 (the mkl package's mkl_rt, by absolute path) on CPUs with AMX,
    where it uses the tiles; fusedmlp's AVX512-BF16 kernel elsewhere (on AVX512-BF16 CPUs
    without AMX it measured about 2x MKL's speed, docs/bf16.md). FUSEDMLP_BF16_GEMM=own|mkl
    forces one (mkl unavailable: ImportError naming why). Returns {name, why[, path]}."""
    import os
    cdef void* lib
    cdef void* product
    cdef void* threads
    forced = os.environ.get("FUSEDMLP_BF16_GEMM", "").strip().lower()
    fm_bf16_use_mkl(NULL, NULL)
    if forced and forced not in ("own", "mkl"):
        raise ImportError(f"FUSEDMLP_BF16_GEMM must be own or mkl, got {forced!r}")
    amx = fm_bf16_amx_why_not().decode()
    if forced == "own":
        return {"name": "own", "why": "FUSEDMLP_BF16_GEMM=own"}
    if not forced and amx:
        return {"name": "own", "why": f"MKL's bf16 product is the default only with AMX: {amx}"}
    try:
        path = _library_file("mkl")
        lib = fm_dlopen(path.encode())
        if lib == NULL:
            raise ImportError(f"cannot load {path}: {fm_dlerror().decode(errors='replace')}")
        product = fm_dlsym(lib, b"cblas_gemm_bf16bf16f32")
        threads = fm_dlsym(lib, b"MKL_Set_Num_Threads_Local")
        if product == NULL or threads == NULL:
            raise ImportError(f"{path} lacks cblas_gemm_bf16bf16f32 or MKL_Set_Num_Threads_Local")
    except ImportError as exc:
        if forced:
            raise ImportError(f"FUSEDMLP_BF16_GEMM=mkl: {exc}") from None
        return {"name": "own", "why": f"the CPU has AMX but MKL's bf16 product is unavailable: {exc}"}
    fm_bf16_use_mkl(product, threads)
    return {"name": "mkl", "path": path,
            "why": "FUSEDMLP_BF16_GEMM=mkl" if forced else "the CPU has AMX-BF16 (MKL uses its tiles)"}


cdef inline dict load_blas(str forced=None):
    """Resolve gemm's backend for the calling module (call once, at its import); returns
    {name, version, path, tried, ...} (tried: why earlier default candidates were skipped).
    forced overrides FUSEDMLP_BLAS (the benchmarks compare backends in one process)."""
    global fm_sgemm, fm_dgemm, fm_gemm_bf16, fm_blas_set_threads, fm_blas_get_threads
    import os
    # The order the default tries them in (docs/threading.md has the measurements): MKL first
    # on Intel CPUs only; on AMD its kernels for narrow outputs (n = 10) ran at a tenth of
    # OpenBLAS's speed, so there it is used only when forced.
    order = ("mkl", "openblas", "scipy") if fm_cpu_is_intel() else ("openblas", "scipy")
    known = ("openblas", "mkl", "scipy")
    if forced is None:
        forced = os.environ.get("FUSEDMLP_BLAS", "")
    forced = forced.strip().lower()
    fm_gemm_bf16 = NULL
    fm_blas_set_threads = NULL
    fm_blas_get_threads = NULL
    if forced and forced not in known:
        raise ImportError(f"FUSEDMLP_BLAS must be one of {', '.join(known)}, got {forced!r}")
    tried = {}
    for name in ((forced,) if forced else order):
        if name == "scipy":
            import scipy
            fm_sgemm = <fm_sgemm_fn>cython_blas.sgemm
            fm_dgemm = <fm_dgemm_fn>cython_blas.dgemm
            info = {"name": "scipy", "version": f"scipy.linalg.cython_blas (SciPy {scipy.__version__})",
                    "path": None, "core": None}
            break
        try:
            info = _open_library(name)
            break
        except ImportError as exc:
            if forced:
                raise ImportError(f"FUSEDMLP_BLAS={forced}: {exc}") from None
            if name == "openblas" and os.environ.get("FUSEDMLP_OPENBLAS_CORETYPE", "").strip():
                raise                   # a forced core never falls back to another backend
            tried[name] = str(exc)
    info["tried"] = tried
    info["bf16_backend"] = _bf16_backend()
    info["bf16_gemm"] = fm_gemm_bf16 != NULL
    info["cpu_bf16"] = bool(fm_cpu_has_bf16())
    return info
