# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).
#
# The parsers subclass MessageParser: its methods are C calls through the class's vtable, and
# the subclasses override the hooks (the last six methods) with the same signatures.

cimport cython


cdef class MessageParser:
    cdef public object _ll_class, _on_body, _cb, _ll, _buf, _framer, _out
    cdef public bint _ll_clean
    cdef public int _state
    cdef public Py_ssize_t _fed, _remaining

    @cython.locals(n=Py_ssize_t)
    cdef Py_ssize_t _steps(self, data, Py_ssize_t pos) except? -2
    cdef _setup(self, ll_class, on_body, int state)
    cdef _begin_head(self)
    @cython.locals(n=Py_ssize_t, end=Py_ssize_t, old=Py_ssize_t)
    cdef Py_ssize_t _head_step(self, data, Py_ssize_t pos) except? -2
    cdef _general(self)
    cdef _partial_head(self)
    cdef int _feed_head(self, raw, bint paused_ok) except? -2
    cdef _expect_body(self, Py_ssize_t length, framer)
    @cython.locals(n=Py_ssize_t, end=Py_ssize_t, remaining=Py_ssize_t)
    cdef Py_ssize_t _body_step(self, data, Py_ssize_t pos) except? -2
    cpdef bint passes(self, Py_ssize_t n) except -1
    cpdef pass_on(self, data, Py_ssize_t n)

    cdef Py_ssize_t _complete_head(self, raw, data, Py_ssize_t end) except? -2
    cdef bint _head_limits(self) except -1
    cdef _bad_head(self, text)
    cdef _bad_body(self, exc)
    cdef _count_body(self, Py_ssize_t n)
    cdef Py_ssize_t _message_end(self, Py_ssize_t end, Py_ssize_t n) except? -2


cpdef Py_ssize_t content_length(bytes value) except? -2
cpdef bint keep_alive_option(list tokens, bint keep_alive) except -1
cpdef bint cut_connection_options(list tokens, bytes low, list cut, frozenset keep) except -1
