# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.model cimport Backend as CBackend


cdef class IdleConnection:
    cdef public CBackend backend
    cdef public bint closed
    cdef public double idle_deadline

    cpdef bint reusable(self) except -1
    cpdef close(self)


cdef class IdleUpstreams:
    cdef public object loop
    cdef public dict idle
    cdef public Py_ssize_t reused

    @cython.locals(conns=list, conn=IdleConnection)
    cpdef acquire(self, backend)
    @cython.locals(backend=CBackend, conns=list)
    cpdef release(self, IdleConnection conn, long max_idle, double idle_timeout, double now)
    cpdef discard(self, conn)
