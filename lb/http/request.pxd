# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.heads cimport RequestHead as CRequestHead


cdef class RequestParser:
    cdef public object _on_head, _on_body, _on_end, _on_error
    cdef public Py_ssize_t _max_line, _max_header_bytes, _max_headers
    cdef public object _max_body, _max_body_or_none, _remaining
    cdef public object _cb, _ll, _llf, _framer, _buf, _stash
    cdef public bint _ll_clean, _last_closes, _running, _eof
    cdef public int _state
    cdef public Py_ssize_t _fed
    cdef public CRequestHead _head
    cdef public object requests

    cpdef feed(self, data)
    cpdef set_limits(self, limits)
    cpdef resume(self)
    cpdef close(self)
    cpdef _run(self, data)
    cpdef _fail(self, status, reason)
    @cython.locals(head=CRequestHead)
    cpdef _complete_head(self, raw)
    cpdef _end(self)
