# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).
#
# weighted is compiled because pick() runs per request: as C, the comparison of the classes'
# tops and the step arithmetic are on C doubles (the same IEEE doubles as in Python, so the
# sequence is the same), and a member's and a class's fields are struct loads.

cimport cython


cdef class _Member:
    cdef public object backend
    cdef public double key, weight
    cdef public long rank


cdef class _Class:
    cdef public list keys
    cdef public dict ranks
    cdef public double weight


cdef class WeightedRoundRobin:
    cdef public object _roster
    cdef public dict _members, _by_rank, _by_weight
    cdef public list _classes
    cdef public long _step
    cdef public double _total, _negsum

    @cython.locals(classes=list, t=cython.long, best=_Class, klass=_Class, top=cython.double,
                   value=cython.double, rank=cython.long, k=cython.double, v=cython.double,
                   ranks=list, total=cython.double, lowered=cython.double, below=object,
                   m=_Member, i=Py_ssize_t, n=Py_ssize_t)
    cpdef pick(self, key)
