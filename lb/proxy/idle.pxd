# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cdef class IdleUpstreams:
    cdef public object loop, idle, reused

    cpdef acquire(self, backend)
    cpdef release(self, conn, max_idle, idle_timeout, double now)
    cpdef discard(self, conn)
