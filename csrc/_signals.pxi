# Ctrl-C (and any other Python signal handler) during one long compiled epoch.
#
# Included by _network.pyx before epoch(). The epoch runs without the GIL, so Python's
# handlers cannot run until it returns, and an epoch over a big data set lasts seconds to
# minutes. Python's C-level handler only records the signal; PyErr_CheckSignals() runs the
# recorded handlers, and needs the GIL. So at a step boundary, when SIGNAL_CHECK_NS have
# passed since the last look (one monotonic clock read per step otherwise), the epoch takes
# the GIL for one PyErr_CheckSignals(). A handler that raises (SIGINT's default raises
# KeyboardInterrupt) stops the epoch there: every step is whole (the parameters, the
# optimiser's state and step count, dropout_step and a schedule's count agree, as after a
# refused step), and train_epoch re-raises the handler's exception once it holds the GIL
# again. Only the main thread looks: Python runs signal handlers there alone, and another
# thread would take the GIL for nothing.

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.exc cimport PyErr_CheckSignals

import threading as _threading

cdef extern from "fm_platform.h" nogil:
    long long fm_now_ns()

cdef extern from "Python.h":
    unsigned long PyThread_get_thread_ident()

cdef enum:
    INTERRUPTED = 1000         # epoch(): a signal handler raised (never a public status)

# 10 ms between looks: a Ctrl-C stops the epoch within 10 ms plus one step, and a GIL
# round trip (~1 us uncontended) costs ~0.01 % of the epoch.
cdef long long SIGNAL_CHECK_NS = 10000000
cdef unsigned long MAIN_THREAD = _threading.main_thread().ident


cdef struct Signals:
    bint watch                 # this epoch runs on the main thread: look for signals
    long long last             # fm_now_ns() of the last look
    PyObject* raised           # the exception a handler raised (owned), or NULL


cdef inline void signals_start(Signals* s):
    """Before the epoch (with the GIL)."""
    s.watch = PyThread_get_thread_ident() == MAIN_THREAD
    s.last = fm_now_ns()
    s.raised = NULL


cdef bint signal_handled_raising(Signals* s) noexcept with gil:
    try:
        PyErr_CheckSignals()
    except BaseException as exc:
        s.raised = <PyObject*>exc
        Py_INCREF(exc)
        return True
    return False


cdef inline bint signals_stop(Signals* s) noexcept nogil:
    """At a step boundary: whether a signal handler raised (the epoch then stops)."""
    cdef long long now
    if s == NULL or not s.watch:
        return False
    now = fm_now_ns()
    if now - s.last < SIGNAL_CHECK_NS:
        return False
    s.last = now
    return signal_handled_raising(s)


cdef inline void signals_raise(Signals* s):
    """After the epoch (with the GIL): re-raise what a handler raised."""
    cdef object exc
    if s.raised != NULL:
        exc = <object>s.raised
        Py_XDECREF(s.raised)
        s.raised = NULL
        raise exc
