# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

from lb.model cimport Backend as CBackend


cdef class PoolRuntime:
    cdef public object _panic_next, backends, by_token, config, key_kind, key_name, name
    cdef public object on_demand, on_idle, on_success, report_5xx, sticky_cookie, strategy
    cdef public object queue, queue_wait, queue_wait_sum, budget_since
    cdef public bint needs_key, limited, tracks_load, tracks_latency
    cdef public long eligible, in_flight, waiting, report_above, workers
    cdef public long queue_full, queue_timeouts, hold_timeouts, waited
    cdef public long attempts, retried, budget_exhausted
    cdef public long limits, generation
    cdef public object lineage, send_proxy, _snapshot
    cdef public long max_requests, max_idle, retries
    cdef public double idle_timeout
    cdef public bint panic_all

    cpdef acquire(self, CBackend backend)
    cpdef release(self, CBackend backend)
    cpdef _wake(self)
    cpdef _report_demand(self)
