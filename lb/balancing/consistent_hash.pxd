# Compiled declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it when a C compiler is there, and Python runs
# it as it is otherwise (see docs/architecture.md). Keep both in step: every attribute the
# class sets must be declared here.
#
# consistent_hash is compiled because pick() runs per request. ConsistentHash is a C class so
# that a pick reads its ring and slot tables as struct fields (not through getattr), and pick()
# does its arithmetic on C integers; _Build stays a Python class. The ring (arrays of packed
# 64-bit points, ``maxes`` an array too) and its arithmetic are the same in both builds, so the
# ring is bit for bit the same.
#
# The binary searches of a pick (``_find``: which chunk, then where in it) and the read of the
# point found (``_owner_at``) take an array's 64-bit words in place, as C integers: no Python
# int per word, and no buffer acquisition per call.

cimport cython
from cpython.array cimport array as carray

cdef unsigned long long _OWNER_MASK, _POSITION_MASK


@cython.locals(data=cython.p_ulonglong, n=Py_ssize_t, lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t,
               guess=Py_ssize_t, step=Py_ssize_t, first=cython.ulonglong, last=cython.ulonglong)
cdef Py_ssize_t _find(carray words, unsigned long long position) except -1
cdef Py_ssize_t _owner_at(carray chunk, Py_ssize_t i) except -1


cdef class ConsistentHash:
    cdef object __weakref__
    cdef public object _roster, _bound, _build, _weights, _spin, _vnodes, _dirty
    cdef public list _slots, _active, _free, _chunks, _cumulative
    cdef public dict _slot_of, _counts, _held, _cache, _behind
    cdef public carray _maxes
    cdef public Py_ssize_t _load, _size, _cursor_chunk, _cursor
    cdef public double _total_weight
    cdef public bint _scheduled, _starting, tracks_load

    cpdef on_acquire(self, backend)
    cpdef on_release(self, backend)

    @cython.locals(chunks=list, chunk=carray, ci=Py_ssize_t, i=Py_ssize_t, owner=Py_ssize_t,
                   position=cython.ulonglong)
    cpdef pick(self, key)

    @cython.locals(chunks=list, chunk=carray, slots=list, active=list, owner=Py_ssize_t,
                   total=cython.double, per_weight=cython.double)
    cpdef _walk(self, Py_ssize_t ci, Py_ssize_t i, bound, key)
