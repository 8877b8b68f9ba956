# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.framing cimport MessageParser
from lb.http.heads cimport RequestHead as CRequestHead, new_request_head


cdef class DirectHandler:
    cpdef on_request_head(self, CRequestHead head)
    cpdef on_request_end(self)


cdef class RequestParser(MessageParser):
    cdef public object _handler, _on_head, _on_end
    cdef public DirectHandler _direct
    cdef public Py_ssize_t _max_line, _max_header_bytes, _max_headers
    cdef public object _max_body, _max_body_or_none, _stash
    cdef public bint _last_closes, _running, _eof
    cdef public CRequestHead _head
    # (C counters: a Python int counter makes a new int object per increment past 256)
    cdef public Py_ssize_t requests

    @cython.locals(head=CRequestHead, end=Py_ssize_t)
    cpdef feed(self, data)
    @cython.locals(parser=RequestParser)
    cpdef RequestParser spawn(self, handler)
    cdef _begin(self, handler)
    cpdef set_limits(self, limits)
    cpdef resume(self)
    cpdef close(self)
    cpdef unbind(self)
    cdef _bind_body(self)
    cpdef _run(self, data)
    cpdef _fail(self, status, reason)
    @cython.locals(head=CRequestHead)
    cdef Py_ssize_t _complete_head(self, raw, data, Py_ssize_t end) except? -2
    @cython.locals(direct=DirectHandler)
    cdef _take_head(self, CRequestHead head)
    @cython.locals(head=CRequestHead)
    cdef CRequestHead _scanned(self, raw)
    cdef CRequestHead _read_head(self, raw)
    @cython.locals(head=CRequestHead, line_end=Py_ssize_t)
    cdef CRequestHead _read_general(self, raw)
    @cython.locals(direct=DirectHandler)
    cpdef _end(self)
    cdef bint _head_limits(self) except -1
    cdef _bad_head(self, text)
    cdef _bad_body(self, exc)
    cdef _count_body(self, Py_ssize_t n)
    cdef Py_ssize_t _message_end(self, Py_ssize_t end, Py_ssize_t n) except? -2


@cython.locals(head=CRequestHead)
cpdef CRequestHead read_request_head(
    bytes raw, Py_ssize_t line_end, bint upgraded, bint message_complete, max_body
)
