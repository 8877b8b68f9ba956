# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.framing cimport MessageParser
from lb.http.heads cimport ResponseHead as CResponseHead, new_response_head


cdef class ResponseParser(MessageParser):
    cdef public object _on_interim, _on_head, _on_end, _on_whole, _on_upgrade, _on_error
    cdef public Py_ssize_t _max_head
    cdef public object _scan
    cdef public bint _head_request, _upgrade, _dechunk
    cdef public CResponseHead _head
    # (C counters: a Python int counter makes a new int object per increment past 256)
    cdef public Py_ssize_t bytes_received, extra_bytes, responses

    cpdef start(self, bint head_request=*, bint upgrade=*, bint dechunk=*)
    cpdef close(self)
    cpdef feed(self, data)
    cpdef feed_from(self, data, Py_ssize_t pos)
    @cython.locals(head=CResponseHead, n=Py_ssize_t, end=Py_ssize_t, raw=bytes)
    cpdef Py_ssize_t _scan_head(self, data) except? -2
    cpdef _fail(self, reason)
    @cython.locals(head=CResponseHead)
    cdef Py_ssize_t _complete_head(self, raw, data, Py_ssize_t end) except? -2
    cpdef Py_ssize_t _deliver(self, CResponseHead head, data, Py_ssize_t end) except? -2
    cdef bint _head_limits(self) except -1
    cdef _bad_head(self, text)
    cdef _bad_body(self, exc)
    cdef _count_body(self, Py_ssize_t n)
    @cython.locals(head=CResponseHead)
    cdef Py_ssize_t _message_end(self, Py_ssize_t end, Py_ssize_t n) except? -2


@cython.locals(head=CResponseHead)
cpdef CResponseHead read_response_head(bytes raw, bint head_request, bint dechunk)
