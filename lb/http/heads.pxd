# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython


cdef class RequestHead:
    cdef public object method, target, path, version, raw, _low
    cdef public object host, content_length, upgrade, request_id, _xff, _origin_target, _headers
    cdef public object _cut
    cdef public bint keep_alive, chunked, expect_continue, _cut_once
    cdef public Py_ssize_t _line_end, body_bytes

    cdef _init(self, method, target, path, version, raw, low, Py_ssize_t line_end, host,
               bint keep_alive, content_length, bint chunked, upgrade, bint expect_continue,
               request_id)
    cpdef get(self, name)


cdef class ResponseHead:
    cdef public int status
    cdef public object version, raw, _low, _headers, content_length, _cut
    cdef public bint chunked, no_body, keep_alive, close_delimited, dechunked
    cdef public bint _cut_once, _conn_keep_alive
    cdef public Py_ssize_t _line_end, _conn_at, body_bytes

    cdef _init(self, int status, version, raw, low, Py_ssize_t line_end)


@cython.locals(head=RequestHead)
cpdef RequestHead new_request_head(
    method, target, path, version, raw, low, Py_ssize_t line_end, host, bint keep_alive,
    content_length, bint chunked, upgrade, bint expect_continue, request_id
)
@cython.locals(head=ResponseHead)
cpdef ResponseHead new_response_head(int status, version, raw, low, Py_ssize_t line_end)
