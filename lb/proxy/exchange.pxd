# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.heads cimport RequestHead as CRequestHead, ResponseHead as CResponseHead
from lb.http.request cimport DirectHandler
from lb.http.response cimport ResponseParser as CResponseParser
from lb.http.rewrite cimport client_response_out, upstream_request_head
from lb.model cimport Backend as CBackend
from lb.proxy.context cimport HttpContext
from lb.proxy.pool cimport PoolRuntime as CPoolRuntime
from lb.proxy.idle cimport IdleConnection, IdleUpstreams as CIdleUpstreams


cdef class ClientSide(DirectHandler):
    cdef public object listener, transport, client_ip, proxied
    cdef public HttpContext ctx
    cdef public int state
    cdef public bint write_paused, through, upstream_full

    cpdef exchange_done(self, double now)
    cpdef close_now(self)
    cpdef abort(self)
    cpdef tunnel(self, upstream, data)


cdef class Exchange:
    cdef public ClientSide conn
    cdef public HttpContext ctx
    cdef public CRequestHead head
    cdef public CPoolRuntime pool
    cdef public CBackend backend
    cdef public object connect_task, key, pending
    cdef public list tried
    cdef public object upstream_head, request_id, set_cookie, out_head, wait_handle
    cdef public HttpUpstreamProtocol upstream
    cdef public int status, retries
    cdef public double t_start, t_mark
    cdef public bint request_complete, response_started, done, keep_alive

    cdef _init(self, ClientSide conn, CRequestHead head, double t_start)
    @cython.locals(head=CRequestHead, ctx=HttpContext)
    cpdef start(self)
    cpdef request_body(self, data)
    cpdef request_end(self)
    @cython.locals(pool=CPoolRuntime, backend=CBackend)
    cpdef _hash_key(self, CPoolRuntime pool, CRequestHead head)
    cpdef _dispatch(self)
    cpdef _use(self, backend)
    cpdef _attach(self, HttpUpstreamProtocol conn)
    cpdef HttpUpstreamProtocol _detach(self, bint close)
    cpdef _release_backend(self)
    @cython.locals(lines=bytes)
    cpdef bytes _client_out(self, CResponseHead head, bytes body)
    cpdef response_head(self, CResponseHead head)
    cpdef response_body(self, data)
    cpdef response_whole(self, CResponseHead head, body, bint reusable)
    cpdef flush_head(self)
    @cython.locals(pool=CPoolRuntime, up=HttpUpstreamProtocol, ctx=HttpContext, b=CBackend,
                   elapsed=cython.double)
    cpdef response_end(self, bint reusable)
    cpdef respond_error(self, int status, reason, retry_after=*)
    cpdef check_timeout(self, double now)
    @cython.locals(ctx=HttpContext)
    cpdef account(self, double now)


@cython.locals(ex=Exchange)
cpdef Exchange new_exchange(ClientSide conn, CRequestHead head, double t_start)


cdef class ReadBuffer:
    cdef public object buf, view

    cpdef renew(self)


cdef class HttpUpstreamProtocol(IdleConnection):
    cdef public object transport
    cdef public Py_ssize_t requests
    cdef public CIdleUpstreams upstreams
    cdef public CResponseParser parser
    cdef public Exchange exchange

    cpdef bint reusable(self) except -1
    cpdef data_received(self, data)
    cpdef get_buffer(self, Py_ssize_t sizehint)
    @cython.locals(read=ReadBuffer, parser=CResponseParser, ex=Exchange, client=ClientSide,
                   start=Py_ssize_t, end=Py_ssize_t, n=Py_ssize_t)
    cpdef buffer_updated(self, Py_ssize_t nbytes)
    cpdef close(self)
    cpdef on_response_body(self, data)
    cpdef on_response_end(self, bint reusable)
    cpdef on_response_whole(self, CResponseHead head, body, bint reusable)


@cython.locals(i=Py_ssize_t, bound=double)
cpdef Py_ssize_t latency_bucket(double elapsed)
