# Compiled-class declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it with these attribute and method types when
# a C compiler is there, and Python runs it as it is otherwise. Keep both in step: every
# attribute the class sets must be declared here (see docs/architecture.md).

cdef class TlsConnection:
    cdef public object app, counters, incoming, loop, outgoing, ssl, sslobj, timer, transport
    cdef public double timeout
    cdef public Py_ssize_t held
    cdef public int state
    cdef public bint read_paused, reading_scheduled, write_paused, closing, drained

    cpdef data_received(self, data)
    cpdef _handshake(self, data)
    cpdef _read_record(self, Py_ssize_t size)
    cpdef _read(self)
    cpdef _flush(self)
    cpdef write(self, data)
    cpdef writelines(self, lines)
    cpdef close(self)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
