# Compiled declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it when a C compiler is there, and Python runs
# it as it is otherwise (see docs/architecture.md).
#
# consistent_hash is compiled because pick() runs per request. Its classes stay Python classes
# (no C layout is declared here): compiled, their methods run as C functions instead of
# bytecode, and the ring (arrays of packed 64-bit points) and its arithmetic are the same
# Python objects in both builds, so the ring is bit for bit the same.
#
# One function is typed: the binary search of a pick in a chunk of the ring, over the chunk's
# 64-bit words as C integers (see ``_find``).

cimport cython


@cython.locals(words=cython.ulonglong[:], target=cython.ulonglong, lo=Py_ssize_t,
               hi=Py_ssize_t, mid=Py_ssize_t)
cdef Py_ssize_t _find(object chunk, object position) except? -1
