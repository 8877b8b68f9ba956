# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.heads cimport RequestHead as CRequestHead, ResponseHead as CResponseHead
from lb.http.request cimport RequestParser as CRequestParser
from lb.http.response cimport ResponseParser as CResponseParser
from lb.proxy.pool cimport PoolRuntime as CPoolRuntime
from lb.proxy.upstream_pool cimport UpstreamPool as CUpstreamPool


cdef class HttpContext:
    cdef public object listener, loop, router, limits, via, access, _access_file, _sweep_handle
    cdef public CUpstreamPool upstreams
    cdef public double keepalive_timeout, header_timeout, response_timeout, _sweep_interval
    cdef public bint stopping
    cdef public object requests, retries, bytes_in, bytes_out, responses


cdef class HttpUpstreamProtocol:
    cdef public object transport, requests
    cdef public object backend
    cdef public CUpstreamPool upstreams
    cdef public CResponseParser parser
    cdef public HttpClientProtocol client
    cdef public bint closed
    cdef public double idle_deadline

    cpdef data_received(self, data)
    cpdef close(self)
    cpdef on_response_body(self, data)
    cpdef on_response_end(self, bint reusable)
    cpdef on_response_whole(self, CResponseHead head, body, bint reusable)


cdef class HttpClientProtocol:
    cdef public object listener, loop, transport, connect_task, key, tried
    cdef public CPoolRuntime pool
    cdef public object backend
    cdef public object client_ip, upstream_head, request_id, set_cookie, out_head, pending
    cdef public object retries
    cdef public CRequestParser parser
    cdef public CRequestHead head
    cdef public HttpContext ctx
    cdef public HttpUpstreamProtocol upstream
    cdef public int state, status
    cdef public double t_mark, t_start
    cdef public bint client_eof, request_complete, response_started, keep_alive, write_paused

    cpdef data_received(self, data)
    @cython.locals(pool=CPoolRuntime)
    cpdef on_request_head(self, CRequestHead head)
    cpdef on_request_body(self, data)
    cpdef on_request_end(self)
    @cython.locals(pool=CPoolRuntime)
    cpdef _dispatch(self)
    cpdef _attach(self, HttpUpstreamProtocol conn)
    cpdef _release_backend(self)
    cpdef _client_head(self, CResponseHead head)
    cpdef response_head(self, CResponseHead head)
    cpdef response_whole(self, CResponseHead head, body, bint reusable)
    cpdef flush_head(self)
    @cython.locals(pool=CPoolRuntime, conn=HttpUpstreamProtocol)
    cpdef response_end(self, bint reusable)
    cpdef _finish_exchange(self, double now)
    cpdef _account(self, double now)
