# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

from lb.http.request cimport RequestParser as CRequestParser
from lb.proxy.idle cimport IdleUpstreams as CIdleUpstreams


cdef class HttpContext:
    cdef public object loop, clock, access, access_lines, config, router, limits, via, on_empty
    cdef public set connections
    cdef public dict pools
    cdef public object default_pool
    cdef public bint routed
    cdef public Py_ssize_t max_connections, accepted, rejected
    cdef public object _sweep_handle
    cdef public CIdleUpstreams upstreams
    cdef public CRequestParser parser_template
    cdef public double keepalive_timeout, header_timeout, response_timeout, _sweep_interval
    cdef public double connect_timeout, idle_timeout
    cdef public bint stopping
    # (C counters: a Python int counter makes a new int object per increment past 256)
    cdef public Py_ssize_t requests, retries, bytes_in, bytes_out
    cdef public list responses
    cdef public object proto, hsts, subject_header, redirect

    cpdef bint admit(self, conn) except -1
    cpdef release(self, conn)
