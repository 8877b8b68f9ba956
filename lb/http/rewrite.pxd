# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cimport cython

from lb.http.heads cimport RequestHead as CRequestHead, ResponseHead as CResponseHead


cpdef tuple upstream_request_head(CRequestHead head, client_ip, proto, request_id, via)
@cython.locals(raw=bytes, low=bytes, i=Py_ssize_t, j=Py_ssize_t)
cpdef client_response_head(CResponseHead head, bint close, extra, bint http10_client)
@cython.locals(raw=bytes, i=Py_ssize_t)
cpdef bytes client_response_out(CResponseHead head, bint close, bytes request_id, bytes lines,
                                bint http10_client, bytes body)
