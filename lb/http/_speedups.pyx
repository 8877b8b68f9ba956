# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled fast paths for the common request and response heads (optional).

The parsers in ``request.py`` and ``response.py`` are the reference: they take every head and
produce every error. These functions take only the common, unambiguous heads and return ``None``
for anything else, and the parser then takes its general path. So a head this module declines
costs one extra call, and a head it takes gets exactly the result the general path would give
(``tests/unit/test_http_speedups.py`` checks that on generated heads).

A head the scan takes never reaches llhttp: the scan checks, more strictly, all that llhttp
would (for requests a method llhttp knows and RFC 3986 characters in the target, for
responses a plain status line; token names, visible ASCII in values, CRLF line ends: no
obs-fold, no bare CR or LF, no whitespace before a colon), so it takes only heads llhttp would
take too, and skipping llhttp there is a good part of a message's cost (about 10,000
instructions for a browser's request head). The differential tests in
``tests/unit/test_http_speedups.py`` and ``tests/unit/test_response_scan_llhttp.py`` hold
the scans to that. The scans assume
nothing: every loop is bounded by the CRLFCRLF that ends the head, and a line without a colon
is declined. One pass lowercases the head into a new bytes object (the parsers keep it as
``head._low``) and looks at each header name on the way.

What they take: origin-form ``HTTP/1.0`` and ``HTTP/1.1`` requests whose special headers are
single Host, Content-Length and Connection (``close`` or ``keep-alive`` only), plus hop-by-hop
and X-Forwarded-Proto/-Host lines to drop; final (non-1xx) responses with a single
Content-Length, a single ``Transfer-Encoding: chunked`` and a Connection of ``close`` or
``keep-alive``. Transfer-Encoding, Upgrade, Expect, X-Forwarded-For and X-Request-ID on requests,
duplicates of any special header, and every error, go to the general path.

Build: ``pip install -e .`` compiles it when Cython and a C compiler are present (see
``setup.py``); ``LB_NO_EXTENSIONS=1`` makes ``lb.http`` ignore it at run time.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcpy


cdef extern from "string.h" nogil:
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)

cdef bytes V11 = b"1.1"
cdef bytes V10 = b"1.0"
cdef bytes M_GET = b"GET"
cdef bytes M_HEAD = b"HEAD"
cdef bytes M_POST = b"POST"
cdef bytes M_PUT = b"PUT"
cdef bytes M_DELETE = b"DELETE"
cdef bytes M_OPTIONS = b"OPTIONS"
cdef bytes M_PATCH = b"PATCH"

cdef bytes N_CONNECTION = b"connection"
cdef bytes N_KEEP_ALIVE = b"keep-alive"
cdef bytes N_PROXY_CONNECTION = b"proxy-connection"
cdef bytes N_TE = b"te"
cdef bytes N_TRAILER = b"trailer"
cdef bytes N_XFP = b"x-forwarded-proto"
cdef bytes N_XFH = b"x-forwarded-host"

# Header kinds.
cdef enum:
    H_OTHER = 0
    H_HOST = 1
    H_CL = 2
    H_TE = 3
    H_CONN = 4
    H_DECLINE = 5
    H_KEEP_ALIVE = 6
    H_PROXY_CONN = 7
    H_TE_HOP = 8
    H_TRAILER = 9
    H_XFP = 10
    H_XFH = 11
    H_UPGRADE = 12

# Characters of the authority grammar accepted in Host (lb.http.request._HOST_CHARS).
cdef bint HOST_OK[256]
# What scan_request lets through without llhttp (a subset of what llhttp accepts in strict
# mode, so that a head it takes is one llhttp would take): token characters in header names
# (RFC 9110 tchar), visible ASCII, SP and HTAB in values (no obs-text, no CTL), and the RFC
# 3986 characters in the target.
cdef bint TCHAR[256]
cdef bint VALUE_OK[256]
cdef bint TARGET_OK[256]
# The lowercase of every byte; and, for the per-byte loops of the scans (one table load and one
# test per byte), the lowercase of a byte allowed in a header name (``NAME_LOW``) or value
# (``VALUE_LOW``), 0 for a byte that is not (no allowed byte lowercases to 0).
cdef unsigned char LOWER[256]
cdef unsigned char NAME_LOW[256]
cdef unsigned char VALUE_LOW[256]
cdef int _i
for _i in range(256):
    HOST_OK[_i] = False
    TCHAR[_i] = False
    VALUE_OK[_i] = 32 <= _i <= 126 or _i == 9
    TARGET_OK[_i] = False
    LOWER[_i] = _i + 32 if 65 <= _i <= 90 else _i
    NAME_LOW[_i] = 0
    VALUE_LOW[_i] = LOWER[_i] if VALUE_OK[_i] else 0
for _i in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%":
    HOST_OK[_i] = True
for _i in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~":
    TCHAR[_i] = True
    NAME_LOW[_i] = LOWER[_i]
for _i in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?[]@!$&'()*+,;=%":
    TARGET_OK[_i] = True


cdef inline bint _eq(const unsigned char* s, Py_ssize_t n, const char* word,
                     Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if s[i] != <unsigned char>word[i]:
            return False
    return True


cdef int _request_kind(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """The kind of a lowercased request header name."""
    cdef unsigned char c = s[0]
    if c == b"h":
        if _eq(s, n, b"host", 4):
            return H_HOST
    elif c == b"c":
        if _eq(s, n, b"content-length", 14):
            return H_CL
        if _eq(s, n, b"connection", 10):
            return H_CONN
    elif c == b"t":
        if _eq(s, n, b"transfer-encoding", 17):
            return H_DECLINE
        if _eq(s, n, b"te", 2):
            return H_TE_HOP
        if _eq(s, n, b"trailer", 7):
            return H_TRAILER
    elif c == b"u":
        if _eq(s, n, b"upgrade", 7):
            return H_DECLINE
    elif c == b"e":
        if _eq(s, n, b"expect", 6):
            return H_DECLINE
    elif c == b"x":
        if n > 12 and _eq(s, 12, b"x-forwarded-", 12):
            if _eq(s + 12, n - 12, b"for", 3):
                return H_DECLINE
            if _eq(s + 12, n - 12, b"proto", 5):
                return H_XFP
            if _eq(s + 12, n - 12, b"host", 4):
                return H_XFH
        elif _eq(s, n, b"x-request-id", 12):
            return H_DECLINE
    elif c == b"k":
        if _eq(s, n, b"keep-alive", 10):
            return H_KEEP_ALIVE
    elif c == b"p":
        if _eq(s, n, b"proxy-connection", 16):
            return H_PROXY_CONN
    return H_OTHER


cdef int _response_kind(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """The kind of a lowercased response header name."""
    cdef unsigned char c = s[0]
    if c == b"c":
        if _eq(s, n, b"content-length", 14):
            return H_CL
        if _eq(s, n, b"connection", 10):
            return H_CONN
    elif c == b"t":
        if _eq(s, n, b"transfer-encoding", 17):
            return H_TE
    elif c == b"u":
        if _eq(s, n, b"upgrade", 7):
            return H_UPGRADE
    elif c == b"k":
        if _eq(s, n, b"keep-alive", 10):
            return H_KEEP_ALIVE
    elif c == b"p":
        if _eq(s, n, b"proxy-connection", 16):
            return H_PROXY_CONN
    return H_OTHER


cdef inline Py_ssize_t _head_end(const unsigned char* r, Py_ssize_t n) noexcept nogil:
    """Where the head in ``r[:n]`` ends: the offset just past its first CRLFCRLF, or -1.
    (``memchr`` for each CR: a head has a few lines; glibc's ``memmem`` costs more to set
    up for a 4-byte needle than this whole search.)"""
    cdef const unsigned char* p = r
    cdef const unsigned char* last = r + n - 3
    while p < last:
        p = <const unsigned char*>memchr(p, 13, last - p)
        if p == NULL:
            return -1
        if p[1] == 10 and p[2] == 13 and p[3] == 10:
            return p - r + 4
        p += 1
    return -1


cdef inline long long _digits(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """A Content-Length value: 1-18 ASCII digits, else -1."""
    cdef long long v = 0
    cdef Py_ssize_t i
    if n < 1 or n > 18:
        return -1
    for i in range(n):
        if not 48 <= s[i] <= 57:
            return -1
        v = v * 10 + (s[i] - 48)
    return v


cdef inline Py_ssize_t _field(unsigned char* low, const unsigned char* r, Py_ssize_t i,
                              Py_ssize_t* colon, Py_ssize_t* vs, Py_ssize_t* ve) noexcept nogil:
    """One header line starting at ``r[i]``, lowercased into ``low``: returns the offset of its
    CRLF and sets the colon's offset and the value's bounds, without the OWS around it; or -1
    for a line without a colon, a name that is not a token, a value character outside
    ``VALUE_OK``, and a CR without its LF (the line syntax llhttp would otherwise check).
    ``r`` ends with CRLFCRLF, so every scan stops inside it."""
    cdef Py_ssize_t j, end, start = i
    cdef unsigned char c = NAME_LOW[r[i]]
    while c:
        low[i] = c
        i += 1
        c = NAME_LOW[r[i]]
    if i == start or r[i] != 58:
        return -1
    colon[0] = i
    low[i] = 58
    i += 1
    end = i
    c = VALUE_LOW[r[end]]
    while c:
        low[end] = c
        end += 1
        c = VALUE_LOW[r[end]]
    if r[end] != 13 or r[end + 1] != 10:
        return -1
    low[end] = 13
    low[end + 1] = 10
    j = end
    while i < j and (r[i] == 32 or r[i] == 9):
        i += 1
    while j > i and (r[j - 1] == 32 or r[j - 1] == 9):
        j -= 1
    vs[0] = i
    ve[0] = j
    return end


def scan_request(bytes raw, long long max_body, Py_ssize_t max_headers=-1,
                 Py_ssize_t max_line=-1, Py_ssize_t max_header_bytes=-1):
    """The common request head, or ``None`` for the general path.

    ``raw`` is a buffer that may be one complete head (CRLFCRLF included): the scan takes only
    a buffer that ends with CRLFCRLF and has no other empty line (a line it could not read as
    a header field), which is exactly one head. The scan checks all that llhttp would in
    the heads it takes, more strictly (a known method, RFC 3986 target characters, token names,
    visible ASCII values, CRLF line ends; see ``TCHAR``), so the caller needs no llhttp for
    them. ``max_body`` is the body limit or -1, ``max_headers`` the most header fields allowed
    (-1: any number): a head over either is left to the general path, which says so.
    The heads it takes frame their body with at most one valid Content-Length and no
    Transfer-Encoding, where llhttp's framing and ours cannot differ.
    Returns ``(method, target, path, version, low, line_end, host, keep_alive, content_length,
    cut)`` with ``cut`` the names of the lines to drop upstream (each on one line).
    """
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef const unsigned char* r = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t i = 0, k, m_end, t_start, t_end, q, line_end, name_start, colon = 0, eol, vs = 0, ve = 0
    cdef int kind
    cdef int host_seen = 0, conn_seen = 0
    cdef int keep_alive = -1
    cdef long long length = -1
    cdef Py_ssize_t host_s = 0, host_e = 0
    cdef bint v11
    cdef unsigned char* low
    cdef int seen_mask = 0
    cdef Py_ssize_t lines = 0
    cdef list cut = []

    if n < 16 or r[n - 4] != 13 or r[n - 3] != 10 or r[n - 2] != 13 or r[n - 1] != 10:
        return None  # (not a whole head: the caller may hand over any buffer)
    # Method: one that llhttp knows, SP
    while i < n and 65 <= r[i] <= 90:
        i += 1
    if i == 0 or i >= n or r[i] != 32:
        return None
    m_end = i
    if m_end == 3 and r[0] == 71 and r[1] == 69 and r[2] == 84:
        method = M_GET
    elif m_end == 4 and _eq(r, 4, b"HEAD", 4):
        method = M_HEAD
    elif m_end == 4 and _eq(r, 4, b"POST", 4):
        method = M_POST
    elif m_end == 3 and _eq(r, 3, b"PUT", 3):
        method = M_PUT
    elif m_end == 6 and _eq(r, 6, b"DELETE", 6):
        method = M_DELETE
    elif m_end == 7 and _eq(r, 7, b"OPTIONS", 7):
        method = M_OPTIONS
    elif m_end == 5 and _eq(r, 5, b"PATCH", 5):
        method = M_PATCH
    else:
        return None
    i += 1
    # Origin-form target: "/" then RFC 3986 characters (no SP, no "#"); the path ends at "?".
    if r[i] != 47:
        return None
    t_start = i
    q = -1
    while i < n and r[i] != 32:
        if not TARGET_OK[r[i]]:
            return None
        if r[i] == 63 and q < 0:
            q = i
        i += 1
    t_end = i
    # SP "HTTP/1." [01] CRLF
    if i + 11 > n or not _eq(r + i, 9, b" HTTP/1.1", 9) and not _eq(r + i, 9, b" HTTP/1.0", 9):
        return None
    v11 = r[i + 8] == 49
    if r[i + 9] != 13 or r[i + 10] != 10:
        return None
    line_end = i + 9
    if 0 <= max_line < line_end or 0 <= max_header_bytes < n - line_end - 2:
        return None

    result = PyBytes_FromStringAndSize(NULL, n)
    low = <unsigned char*>PyBytes_AS_STRING(result)
    for i in range(line_end + 2):
        low[i] = LOWER[r[i]]
    i = line_end + 2
    while i < n - 2:
        # One header line: name ":" value CRLF (llhttp has validated the syntax).
        name_start = i
        eol = _field(low, r, i, &colon, &vs, &ve)
        if eol < 0:
            return None
        lines += 1
        kind = _request_kind(low + name_start, colon - name_start)
        if kind != H_OTHER:
            if kind == H_HOST:
                if host_seen:
                    return None
                host_seen = 1
                host_s = vs
                host_e = ve
                for k in range(vs, ve):
                    if not HOST_OK[r[k]]:
                        return None
            elif kind == H_CL:
                if length >= 0:
                    return None
                length = _digits(r + vs, ve - vs)
                if length < 0:
                    return None
            elif kind == H_CONN:
                if conn_seen:
                    return None
                conn_seen = 1
                if _eq(low + vs, ve - vs, b"close", 5):
                    keep_alive = 0
                elif _eq(low + vs, ve - vs, b"keep-alive", 10):
                    keep_alive = 1
                else:
                    return None
                cut.append(N_CONNECTION)
            elif kind == H_DECLINE:
                return None
            else:
                if seen_mask & (1 << kind):
                    return None
                seen_mask |= 1 << kind
                if kind == H_KEEP_ALIVE:
                    cut.append(N_KEEP_ALIVE)
                elif kind == H_PROXY_CONN:
                    cut.append(N_PROXY_CONNECTION)
                elif kind == H_TE_HOP:
                    cut.append(N_TE)
                elif kind == H_TRAILER:
                    cut.append(N_TRAILER)
                elif kind == H_XFP:
                    cut.append(N_XFP)
                else:
                    cut.append(N_XFH)
        i = eol + 2
    low[n - 2] = 13
    low[n - 1] = 10

    if max_body >= 0 and length > max_body:
        return None
    if 0 <= max_headers < lines:
        return None
    if not host_seen and v11:
        return None
    if keep_alive < 0:
        keep_alive = v11

    target = PyBytes_FromStringAndSize(<const char*>r + t_start, t_end - t_start)
    if q < 0:
        path = target
    else:
        path = PyBytes_FromStringAndSize(<const char*>r + t_start, q - t_start)
    if host_seen:
        host = PyBytes_FromStringAndSize(<const char*>low + host_s, host_e - host_s)
    else:
        host = None
    return (
        method,
        target,
        path,
        V11 if v11 else V10,
        result,
        line_end,
        host,
        keep_alive == 1,
        length if length >= 0 else None,
        tuple(cut),
    )


def scan_response(bytes data, bint head_request, Py_ssize_t max_head=-1):
    """A common final response head, or ``None`` for the general path.

    ``data`` starts with a complete head (its end is the first CRLFCRLF, which the scan finds
    itself: within the first ``max_head`` bytes, when that is not -1), and may go on past it
    with the body; ``head_request``: the request was HEAD. As the request scan
    does, it checks all that llhttp would in the heads it takes, more strictly (the status
    line: ``HTTP/1.0`` or ``HTTP/1.1``, three digits, then nothing or SP and a reason of
    visible ASCII, SP and HTAB; token names, visible ASCII values, CRLF line ends: no
    obs-fold, no bare CR or LF; at most one valid Content-Length, never with
    Transfer-Encoding), so the caller needs no llhttp for them.
    The caller does not use this while de-chunking for an HTTP/1.0 client.
    Returns ``(status, version, low, line_end, content_length, chunked, no_body,
    close_delimited, keep_alive, conn_keep_alive, cut, conn_at, raw)``, with ``conn_at`` where
    the ``Connection: keep-alive`` line starts (its name), 0 without one (the last response on
    a client connection drops that line by its offset: :func:`response_close`), and ``raw``
    the head (``data`` itself when it is only the head).
    """
    cdef Py_ssize_t total = PyBytes_GET_SIZE(data)
    cdef const unsigned char* r = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n
    if 0 <= max_head < total:
        total = max_head
    n = _head_end(r, total)
    if n < 0:
        return None
    cdef Py_ssize_t i, line_end, name_start, colon = 0, eol, vs = 0, ve = 0
    cdef int status, kind
    cdef bint v11
    cdef int keep_alive, conn_seen = 0, conn_keep_alive = 0, te_seen = 0, seen_mask = 0
    cdef long long length = -1
    cdef bint chunked = False, no_body, close_delimited = False
    cdef Py_ssize_t conn_at = 0
    cdef unsigned char* low
    cdef list cut = []

    if n < 16:
        return None
    if _eq(r, 9, b"HTTP/1.1 ", 9):
        v11 = True
    elif _eq(r, 9, b"HTTP/1.0 ", 9):
        v11 = False
    else:
        return None
    for i in range(9, 12):
        if not 48 <= r[i] <= 57:
            return None
    status = (r[9] - 48) * 100 + (r[10] - 48) * 10 + (r[11] - 48)
    if status < 200 or status > 599:
        return None  # 1xx (interim, 101) and invalid codes: the general path
    # SP and a reason phrase of visible ASCII, SP and HTAB (or no reason at all), then CRLF.
    i = 12
    if r[i] == 32:
        i += 1
        while VALUE_OK[r[i]]:
            i += 1
    if r[i] != 13 or r[i + 1] != 10:
        return None
    line_end = i
    keep_alive = v11

    result = PyBytes_FromStringAndSize(NULL, n)
    low = <unsigned char*>PyBytes_AS_STRING(result)
    for i in range(line_end + 2):
        low[i] = LOWER[r[i]]
    i = line_end + 2
    while i < n - 2:
        name_start = i
        eol = _field(low, r, i, &colon, &vs, &ve)
        if eol < 0:
            return None
        kind = _response_kind(low + name_start, colon - name_start)
        if kind != H_OTHER:
            if kind == H_CL:
                if length >= 0:
                    return None
                length = _digits(r + vs, ve - vs)
                if length < 0:
                    return None
            elif kind == H_TE:
                if te_seen or not v11 or not _eq(low + vs, ve - vs, b"chunked", 7):
                    return None
                te_seen = 1
                chunked = True
            elif kind == H_CONN:
                if conn_seen:
                    return None
                conn_seen = 1
                if _eq(low + vs, ve - vs, b"keep-alive", 10):
                    keep_alive = 1
                    conn_keep_alive = 1
                    conn_at = name_start
                elif _eq(low + vs, ve - vs, b"close", 5):
                    keep_alive = 0
                    cut.append(N_CONNECTION)
                else:
                    return None
            elif kind == H_UPGRADE:
                return None
            else:
                if seen_mask & (1 << kind):
                    return None
                seen_mask |= 1 << kind
                cut.append(N_KEEP_ALIVE if kind == H_KEEP_ALIVE else N_PROXY_CONNECTION)
        i = eol + 2
    low[n - 2] = 13
    low[n - 1] = 10

    if length >= 0 and chunked:
        return None
    if status == 204 and (length >= 0 or chunked):
        return None  # framing headers a 204 must not have: the general path drops them
    no_body = status == 204 or status == 304 or head_request
    if not no_body and not chunked and length < 0:
        close_delimited = True
        keep_alive = 0
    return (
        status,
        V11 if v11 else V10,
        result,
        line_end,
        length if length >= 0 else None,
        chunked,
        no_body,
        close_delimited,
        keep_alive == 1,
        conn_keep_alive == 1,
        tuple(cut),
        conn_at,
        data if n == PyBytes_GET_SIZE(data) else PyBytes_FromStringAndSize(<const char*>r, n),
    )




cdef inline char* _put(char* out, bytes piece):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(piece)
    memcpy(out, PyBytes_AS_STRING(piece), n)
    return out + n


cdef inline char* _put_raw(char* out, const char* src, Py_ssize_t n):
    memcpy(out, src, n)
    return out + n


def upstream_head(bytes raw, bytes low, Py_ssize_t line_end, tuple cut, bint v11, object host,
                  bytes client_ip, bytes proto, object rid, object via):
    """What :func:`lb.http.build_upstream_head` returns (the head only) for an origin-form
    request without X-Forwarded-For lines and without an upgrade, whose ``cut`` names occur
    once each: the start line (as HTTP/1.1), the header lines minus those named in ``cut``,
    then X-Forwarded-For, -Proto, -Host (when ``host``), X-Request-ID (when ``rid`` is not
    ``None``) and Via (when ``via`` is not ``None``)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef const char* r = PyBytes_AS_STRING(raw)
    cdef Py_ssize_t spans[16]
    cdef Py_ssize_t nspans = 0, i, j, k, a, b, total, pos
    cdef bytes name, out
    cdef char* o
    cdef const char* lw = PyBytes_AS_STRING(low)
    cdef const char* hit
    cdef char needle[40]
    cdef Py_ssize_t m
    if len(cut) > 8:
        return None
    for name in cut:
        # The line CRLF name ":" in the lowercased head: searched in C (memmem), with the
        # needle on the stack, since this runs per request for every line to drop.
        m = PyBytes_GET_SIZE(name)
        if m > 32:
            return None
        needle[0] = 13
        needle[1] = 10
        memcpy(needle + 2, PyBytes_AS_STRING(name), m)
        needle[m + 2] = 58
        hit = <const char*>memmem(lw + line_end, n - line_end, needle, m + 3)
        if hit == NULL:
            return None
        i = hit - lw
        # The line's CRLF (the head ends with CRLFCRLF: there is one)
        hit = <const char*>memchr(hit + m + 3, 13, n - (i + m + 3))
        if hit == NULL:
            return None
        j = hit - lw
        # keep the spans sorted (insertion sort: there are at most a few)
        k = nspans
        while k > 0 and spans[2 * (k - 1)] > i + 2:
            spans[2 * k] = spans[2 * (k - 1)]
            spans[2 * k + 1] = spans[2 * (k - 1) + 1]
            k -= 1
        spans[2 * k] = i + 2
        spans[2 * k + 1] = j + 2
        nspans += 1
    # Size: the head without its final CRLF, minus the cut lines, plus the tail.
    total = n - 2
    for k in range(nspans):
        total -= spans[2 * k + 1] - spans[2 * k]
    total += 17 + PyBytes_GET_SIZE(client_ip) + 21 + PyBytes_GET_SIZE(proto) + 4
    if host:
        total += 20 + PyBytes_GET_SIZE(<bytes>host)
    if rid is not None:
        total += 16 + PyBytes_GET_SIZE(<bytes>rid)
    if via is not None:
        total += 7 + PyBytes_GET_SIZE(<bytes>via)
    out = PyBytes_FromStringAndSize(NULL, total)
    o = PyBytes_AS_STRING(out)
    if v11:
        o = _put_raw(o, r, line_end + 2)
    else:
        o = _put_raw(o, r, line_end - 1)  # "... HTTP/1." then 1 instead of 0
        o = _put_raw(o, b"1\r\n", 3)
    pos = line_end + 2
    for k in range(nspans):
        a = spans[2 * k]
        b = spans[2 * k + 1]
        if a > pos:
            o = _put_raw(o, r + pos, a - pos)
        pos = b
    if n - 2 > pos:
        o = _put_raw(o, r + pos, n - 2 - pos)
    o = _put_raw(o, b"X-Forwarded-For: ", 17)
    o = _put(o, client_ip)
    o = _put_raw(o, b"\r\nX-Forwarded-Proto: ", 21)
    o = _put(o, proto)
    if host:
        o = _put_raw(o, b"\r\nX-Forwarded-Host: ", 20)
        o = _put(o, <bytes>host)
    if rid is not None:
        o = _put_raw(o, b"\r\nX-Request-ID: ", 16)
        o = _put(o, <bytes>rid)
    if via is not None:
        o = _put_raw(o, b"\r\nVia: ", 7)
        o = _put(o, <bytes>via)
    o = _put_raw(o, b"\r\n\r\n", 4)
    if o - PyBytes_AS_STRING(out) != total:
        raise AssertionError("upstream_head: size mismatch")
    return out


cdef const char* _HEX = b"0123456789abcdef"


def request_id(bytes prefix, unsigned long long n):
    """``b"%s%012x" % (prefix, n)`` (:func:`lb.http.rewrite.new_request_id`), without the
    format machinery: ``prefix`` then ``n`` in lowercase hex, zero-padded to 12 digits."""
    cdef Py_ssize_t p = PyBytes_GET_SIZE(prefix), digits = 12, k
    cdef unsigned long long m = n >> 48
    while m:
        digits += 1
        m >>= 4
    out = PyBytes_FromStringAndSize(NULL, p + digits)
    cdef char* o = PyBytes_AS_STRING(out)
    memcpy(o, PyBytes_AS_STRING(prefix), p)
    for k in range(p + digits - 1, p - 1, -1):
        o[k] = _HEX[n & 15]
        n >>= 4
    return out


def response_out(bytes raw, bytes rid, bytes cookie, bytes hsts, bytes body):
    """``raw[:-2] + b"X-Request-ID: " + rid + b"\\r\\n" + cookie + hsts + b"\\r\\n" + body`` in
    one allocation: a response head that goes to the client as received, with the proxy's
    lines added (``cookie`` and ``hsts`` are whole lines or empty), and the body behind it, for
    one ``write`` (:func:`lb.http.rewrite.client_response_out`)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw) - 2
    cdef Py_ssize_t total
    if n < 2:
        raise ValueError("response_out: not a head")
    total = (n + 14 + PyBytes_GET_SIZE(rid) + 2 + PyBytes_GET_SIZE(cookie)
             + PyBytes_GET_SIZE(hsts) + 2 + PyBytes_GET_SIZE(body))
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* o = PyBytes_AS_STRING(out)
    o = _put_raw(o, PyBytes_AS_STRING(raw), n)
    o = _put_raw(o, b"X-Request-ID: ", 14)
    o = _put(o, rid)
    o = _put_raw(o, b"\r\n", 2)
    o = _put(o, cookie)
    o = _put(o, hsts)
    o = _put_raw(o, b"\r\n", 2)
    o = _put(o, body)
    return out


def response_close(bytes raw, Py_ssize_t conn_at, bytes rid, bytes lines, bytes body):
    """The last response on a client connection, in one allocation: ``raw`` without the
    ``Connection`` line that starts at ``conn_at`` (none when 0: the scan's offset,
    :func:`scan_response`) and without its final CRLF, then ``Connection: close``,
    ``X-Request-ID: rid``, ``lines`` (whole header lines, or empty), the empty line and
    ``body`` (:func:`lb.http.rewrite.client_response_out`). Where the proxy closes the client
    connection after a keep-alive backend's answer (``Connection: close`` traffic), this is
    the rewrite of every response: a slice by offset rather than a search."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw) - 2
    cdef const char* r = PyBytes_AS_STRING(raw)
    cdef Py_ssize_t j = conn_at, total
    cdef const char* hit
    if n < 2:
        raise ValueError("response_close: not a head")
    if conn_at:
        if not 0 < conn_at < n:
            raise ValueError("response_close: the Connection line is not in the head")
        hit = <const char*>memchr(r + conn_at, 13, n - conn_at)
        if hit == NULL:
            raise ValueError("response_close: the Connection line has no end")
        j = hit - r + 2
    total = (n - (j - conn_at) + 19 + 14 + PyBytes_GET_SIZE(rid) + 2 + PyBytes_GET_SIZE(lines)
             + 2 + PyBytes_GET_SIZE(body))
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* o = PyBytes_AS_STRING(out)
    if conn_at:
        o = _put_raw(o, r, conn_at)
        o = _put_raw(o, r + j, n - j)
    else:
        o = _put_raw(o, r, n)
    o = _put_raw(o, b"Connection: close\r\nX-Request-ID: ", 33)
    o = _put(o, rid)
    o = _put_raw(o, b"\r\n", 2)
    o = _put(o, lines)
    o = _put_raw(o, b"\r\n", 2)
    o = _put(o, body)
    return out


def header_value(bytes raw, bytes low, Py_ssize_t start, bytes name):
    """The first value of header ``name`` (lowercase) as sent, stripped of spaces and tabs, or
    ``None``: :func:`lb.http.heads.raw_values`' first item (``RequestHead.get``) without three
    Python-level ``find`` calls and a list. ``low`` is ``raw.lower()``, ``start`` the offset of
    the CRLF that ends the start line. The pool's hash key is read with it on every request."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(low), k = PyBytes_GET_SIZE(name), skip = k + 3
    cdef Py_ssize_t i, j, end
    cdef const char* l = PyBytes_AS_STRING(low)
    cdef const char* r = PyBytes_AS_STRING(raw)
    cdef const char* hit
    cdef char pattern[259]
    if k > 256 or PyBytes_GET_SIZE(raw) != n or not 0 <= start <= n:
        from lb.http.heads import raw_values  # not a head the scan made: the general path
        values = raw_values(raw, low, name, start)
        return values[0] if values else None
    pattern[0] = 13
    pattern[1] = 10
    memcpy(pattern + 2, PyBytes_AS_STRING(name), k)
    pattern[k + 2] = 58  # ':'
    hit = <const char*>memmem(l + start, n - start, pattern, skip)
    if hit is NULL:
        return None
    i = hit - l
    hit = <const char*>memmem(l + i + 2, n - i - 2, b"\r\n", 2)
    # As raw_values' slice: a line without its CRLF (never in a scanned head) runs to n - 1.
    end = n - 1 if hit is NULL else hit - l
    j = i + skip
    while j < end and (r[j] == 32 or r[j] == 9):
        j += 1
    while end > j and (r[end - 1] == 32 or r[end - 1] == 9):
        end -= 1
    return PyBytes_FromStringAndSize(r + j, end - j) if end > j else b""
