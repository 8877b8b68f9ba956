# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).
#
# peak_ewma is compiled because its work is per request (a pick and an answer's sample): as C,
# reading a Backend's ``active`` and an estimate's fields is a struct load, not a descriptor.

cimport cython

from lb.model cimport Backend as CBackend

cdef double _KEEP, _FAR


cdef class _Estimate:
    cdef public CBackend backend
    cdef public double cost, stamp, weight


cdef class PeakEwma:
    cdef public object _backends, _random, _roster
    cdef public tuple _estimates
    cdef public dict _by_backend
    cdef public list _perm
    cdef public long _choices, _n
    cdef public double _floor, _initial, _inv_decay, _keep_dt, _load, _now, _penalty, _typical

    @cython.locals(e=_Estimate, keep_dt=cython.double, typical=cython.double,
                   dt=cython.double, w=cython.double, active=cython.long, cost=cython.double)
    cpdef on_latency(self, CBackend backend, double rtt, double now)

    @cython.locals(cost=cython.double, elapsed=cython.double, floor=cython.double)
    cdef double _estimate(self, _Estimate e, long active)

    @cython.locals(typical=cython.double, floor=cython.double)
    cdef bint _far_worse(self, double cost)

    @cython.locals(n=cython.long, r=cython.double, i=Py_ssize_t, j=Py_ssize_t,
                   ea=_Estimate, eb=_Estimate, a=CBackend, b=CBackend,
                   active_a=cython.long, active_b=cython.long, now=cython.double,
                   floor=cython.double, cost_a=cython.double, cost_b=cython.double,
                   wa=cython.double, wb=cython.double, load=cython.double,
                   x_a=cython.double, x_b=cython.double, cost=cython.double,
                   typical=cython.double)
    cpdef pick(self, key)

    @cython.locals(perm=list, estimates=tuple, best_score=cython.double,
                   best_weight=cython.double, best_cost=cython.double, load=cython.double,
                   k=Py_ssize_t, x=cython.double, r=Py_ssize_t, i=Py_ssize_t, e=_Estimate,
                   b=CBackend, active=cython.long, cost=cython.double, score=cython.double,
                   w=cython.double)
    cdef tuple _pick_among(self, long n, long choices)
