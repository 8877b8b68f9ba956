# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cdef class Backend:
    cdef public object active, address, admin, bytes_in, bytes_out, connect_failures
    cdef public object effective_weight, ejected, failure_streak, health, host, id, latency
    cdef public object latency_sum, port, responses, retries, total, weight
