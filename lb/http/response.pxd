# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.heads cimport ResponseHead as CResponseHead


cdef class ResponseParser:
    cdef public object _on_interim, _on_head, _on_body, _on_end, _on_whole, _on_upgrade
    cdef public object _on_error
    cdef public Py_ssize_t _max_head
    cdef public object _cb, _ll, _llf, _framer, _out, _scan, _buf, _remaining
    cdef public bint _ll_clean, _head_request, _upgrade, _dechunk
    cdef public int _state
    cdef public Py_ssize_t _fed
    cdef public CResponseHead _head
    cdef public object bytes_received, extra_bytes, responses

    cpdef start(self, bint head_request=*, bint upgrade=*, bint dechunk=*)
    cpdef close(self)
    cpdef feed(self, data)
    cpdef feed_from(self, data, Py_ssize_t pos)
    @cython.locals(head=CResponseHead)
    cpdef Py_ssize_t _scan_head(self, data, Py_ssize_t end) except? -2
    cpdef _fail(self, reason)
    cpdef Py_ssize_t _deliver(self, CResponseHead head, data, Py_ssize_t end) except? -2
