# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).
#
# least_conn is compiled because its work is per request (a pick, and the two hooks the pool
# calls as ``active`` goes up and down): as C, ``active`` and a place's weight are struct loads.

cimport cython

from lb.model cimport Backend as CBackend


cdef class _Place:
    cdef public object bucket
    cdef public double weight


cdef class LeastConn:
    cdef public object _roster
    cdef public dict _held, _buckets
    cdef public list _loads

    cpdef on_acquire(self, CBackend backend)
    cpdef on_release(self, CBackend backend)

    @cython.locals(place=_Place, buckets=dict)
    cdef _moved(self, CBackend b)

    @cython.locals(loads=list, buckets=dict)
    cpdef pick(self, key)
