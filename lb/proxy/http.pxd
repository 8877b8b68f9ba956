# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.heads cimport RequestHead as CRequestHead
from lb.http.request cimport RequestParser as CRequestParser
from lb.proxy.context cimport HttpContext
from lb.proxy.exchange cimport ClientSide, Exchange, new_exchange


cdef class HttpClientProtocol(ClientSide):
    cdef public object loop, limits
    cdef public CRequestParser parser
    cdef public Exchange exchange
    cdef public double t_mark
    cdef public bint client_eof, stash_paused

    cdef _init(self, listener, HttpContext ctx)
    cpdef data_received(self, data)
    cpdef on_request_head(self, CRequestHead head)
    cpdef on_request_body(self, data)
    cpdef on_request_end(self)
    cpdef exchange_done(self, double now)
    cpdef read_next(self)
    cpdef close_now(self)
    cpdef abort(self)
    cpdef tunnel(self, upstream, data)


cdef class HttpFactory:
    cdef public object listener
    cdef public HttpContext ctx

    @cython.locals(conn=HttpClientProtocol)
    cpdef HttpClientProtocol connection(self)
