# Flush-to-zero inside fusedmlp's compiled calls (fpenv.h): every entry point that does
# floating-point work brackets it with `saved = fm_fpenv_enter()` ... `fm_fpenv_leave(saved)`
# inside its nogil block, with no early exit in between.

cdef extern from "fpenv.h" nogil:
    ctypedef unsigned long long fm_fpenv     # the C typedef is the platform's control word
    int FM_FPENV_HARDWARE
    fm_fpenv FM_FPENV_FLUSH_BITS
    fm_fpenv FM_FPENV_STATUS_BITS
    fm_fpenv fm_fpenv_get()
    fm_fpenv fm_fpenv_enter()
    void fm_fpenv_leave(fm_fpenv saved)
    void fm_flush_subnormals_f(float* x, Py_ssize_t n)
    void fm_flush_subnormals_d(double* x, Py_ssize_t n)
