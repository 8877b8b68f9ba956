# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).
#
# peak_ewma is compiled because its work is per request (a pick and an answer's sample): as C,
# reading a Backend's ``active`` and an estimate's fields is a struct load, not a descriptor.

cimport cython

from lb.model cimport Backend as CBackend

ctypedef unsigned int uint32  # the draws' generator state and mask

cdef double _E, _KEEP, _FAR, _TO_UNIT
cdef uint32 _MASK32


cdef class _Estimate:
    cdef public CBackend backend
    cdef public double cost, stamp, weight


cdef class PeakEwma:
    cdef public object _backends, _random, _roster
    cdef public tuple _estimates
    cdef public dict _by_backend
    cdef public list _perm
    cdef public long _choices, _n
    cdef public bint _own_rng
    cdef public uint32 _state
    cdef public double _floor, _initial, _inv_decay, _keep_dt, _load, _now, _penalty, _typical

    @cython.locals(e=_Estimate, keep_dt=cython.double, typical=cython.double,
                   dt=cython.double, w=cython.double, active=cython.long, cost=cython.double)
    cpdef on_latency(self, CBackend backend, double rtt, double now)

    @cython.locals(cost=cython.double, elapsed=cython.double, floor=cython.double,
                   fade=cython.double)
    cdef double _estimate(self, _Estimate e, long active)

    @cython.locals(typical=cython.double, floor=cython.double)
    cdef double _limit(self)

    @cython.locals(x=cython.uint)
    cdef double _uniform(self) except? -1.0

    @cython.locals(n=cython.long, i=Py_ssize_t, j=Py_ssize_t,
                   ea=_Estimate, eb=_Estimate, a=CBackend, b=CBackend,
                   active_a=cython.long, active_b=cython.long, now=cython.double,
                   floor=cython.double, cost_a=cython.double, cost_b=cython.double,
                   wa=cython.double, wb=cython.double, load=cython.double,
                   x_a=cython.double, x_b=cython.double, a_wins=bint,
                   typical=cython.double, limit=cython.double, normal=cython.long,
                   fade=cython.double)
    cpdef pick(self, key)

    @cython.locals(estimates=tuple, load=cython.double, x0=Py_ssize_t, x1=Py_ssize_t,
                   x2=Py_ssize_t, k=Py_ssize_t, r=Py_ssize_t, e=_Estimate, b=CBackend,
                   active=cython.long, cost=cython.double, score=cython.double,
                   w=cython.double)
    cdef CBackend _widen(self, long n, Py_ssize_t i, Py_ssize_t j, long normal, double limit,
                         CBackend best, double best_score, double best_weight)

    @cython.locals(perm=list, estimates=tuple, best_score=cython.double,
                   best_weight=cython.double, load=cython.double, limit=cython.double,
                   normal=cython.long, width=cython.long,
                   k=Py_ssize_t, r=Py_ssize_t, i=Py_ssize_t, e=_Estimate,
                   b=CBackend, active=cython.long, cost=cython.double, score=cython.double,
                   w=cython.double)
    cdef CBackend _pick_among(self, long n, long choices)
