# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).
#
# random_two is compiled because pick() runs per request: as C, the index arithmetic, the two
# backends' ``active`` (struct loads) and the comparison are a few instructions.

cimport cython

from lb.model cimport Backend as CBackend


cdef class RandomTwo:
    cdef public object _roster, _weights
    cdef public tuple _backends
    cdef public long _n

    @cython.locals(n=cython.long, i=cython.long, j=cython.long, a=CBackend, b=CBackend,
                   wa=cython.double, wb=cython.double, load_a=cython.double,
                   load_b=cython.double, r=cython.double, s=cython.double)
    cpdef pick(self, key)
