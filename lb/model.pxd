# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).
#
# Backend is compiled so that the data path's compiled modules read its per-request fields
# (eligible, active, limit, the counters) as C struct fields rather than through getattr.

cdef class Backend:
    cdef public object address, host, id, port, weight, max_conn
    # the values behind the admin, health, ejected and effective_weight properties, whose
    # setters keep eligible (derived: never set it) up to date
    cdef public object _admin, _health
    cdef public bint _ejected, eligible
    cdef public double _effective_weight
    cdef public long active, limit, total, connect_failures, failure_streak, retries
    cdef public long bytes_in, bytes_out
    cdef public list responses, latency
    cdef public double latency_sum

    cdef _refresh(self)
