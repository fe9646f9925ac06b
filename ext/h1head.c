/* proxy._h1head: the HTTP/1 head scanner of the ``native`` engine (proxy.h1.engine_native).
 *
 * parse_request(buf, pos, max_head, max_headers, /)
 *     -> (end, method, target, version, headers, found, length, chunked, connection, wire) | None
 * parse_response(buf, pos, max_head, max_headers, /)
 *     -> (end, status, reason, version, headers, found, length, chunked, connection, wire) | None
 *
 * One call does, for the head block that starts at buf[pos], what the grammar scan, an engine's
 * tokenizer and the collection of the framing fields do in Python (proxy.h1.grammar,
 * proxy.h1.strict):
 *
 *   - it finds the block: the start line through the first empty line, which must end within
 *     max_head bytes of pos (where the reader looks for its CRLF CRLF);
 *   - it checks the block against exactly the grammar of proxy.h1.grammar._REQUEST_HEAD or
 *     _RESPONSE_HEAD (CRLF only; names are tokens; values exclude the CTLs other than HT), and that
 *     it has at most max_headers header lines;
 *   - it splits the start line (method, target, version b"1.1"/b"1.0"; or status as an int, reason
 *     with its trailing SP/HT dropped, version) and the header lines (names as received, values
 *     without the SP/HT around them: what both other engines give);
 *   - it collects what the semantic rules (proxy.h1.strict.request_head / response_head) look up.
 *
 * It never decides an error: on anything it does not accept (an incomplete block, a block over the
 * limits, a grammar violation, a request method outside proxy.h1.grammar.KNOWN_METHODS) it returns
 * None, and the Python reader takes its general path, which waits for more bytes or raises the
 * exact ProtocolError. A block it accepts is one the general path would accept too, tokenized the
 * same way.
 *
 * The framing fields. `found` is None when the head is *plain*, and then `length`, `chunked` and
 * `connection` say everything the rules need; otherwise `found` is the dict that
 * proxy.h1.strict._framing_fields returns for `headers` (lower-case framing name -> its values, in
 * order) and the three are None, False, 0. A head is plain when each of these holds:
 *   - Content-Length: absent (length None), or one header of 1-15 digits (length, an int);
 *   - Transfer-Encoding: absent, or one header whose value is exactly "chunked" (chunked True) in
 *     an HTTP/1.1 message without Content-Length;
 *   - Connection: absent (0), or one header whose value is one token, "close" (1) or "keep-alive"
 *     (2), in any case;
 *   - requests only: the target is in origin-form and the method is not CONNECT; Host is one
 *     header whose value is reg-name characters and an optional ":" and digits (a subset of
 *     proxy.h1.grammar._HOST), or absent from an HTTP/1.0 request; there is no Expect header.
 * Upgrade (and, for a response, Host and Expect) do not matter to a plain head: the rules only read
 * Upgrade when Connection lists "upgrade". So a plain head is valid, its framing follows from the
 * three values alone, and its headers need no canonical rewrite.
 *
 * The wire bytes. `wire` is the head block (bytes) when the head is *bare*, else None. A head is
 * bare when it is plain, HTTP/1.1, and holds no hop-by-hop header other than a plain
 * "Transfer-Encoding: chunked" and the plain Connection header (no Keep-Alive, Proxy-Connection,
 * Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Upgrade); for a response, its reason phrase
 * is also non-empty with no SP/HT after it. `wire` is then buf[pos:end] without the Connection
 * line if there is one: exactly what proxy.h1.writer would write for the head in keep-alive (the
 * same start line, fields and framing; only the order of the framing header and the OWS around
 * values may differ), so a mux may relay it unchanged.
 *
 * fields(headers, drop, /) -> (bytes, count) | None
 *
 * proxy.h1.writer's loop over the header fields of a head it re-serialises (_copy_fields): every
 * (name, value) pair of the list `headers` whose lower-cased name is neither hop-by-hop
 * (proxy.message.HOP_BY_HOP), Content-Length nor Transfer-Encoding nor in the frozenset `drop`
 * (lower-case names), written "name: value\r\n" in order, and how many were. None when a name or
 * value holds CR, LF or NUL, an item is not a pair of bytes, or there is a Connection header
 * (whose tokens nominate more names to drop): the Python loop then runs (and its check raises the
 * exact error).
 *
 * Arguments: buf is bytes (or exports a contiguous buffer); pos, max_head and max_headers are ints,
 * 0 <= pos <= len(buf), the other two >= 0; anything else raises ValueError (TypeError for the
 * wrong types). The GIL is held throughout.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Byte classes, filled once at import (proxy.h1.grammar's character sets). */
static uint8_t IS_TCHAR[256];  /* _TCHAR */
static uint8_t IS_TARGET[256]; /* _TARGET_CHAR */
static uint8_t IS_VALUE[256];  /* a field value: not a CTL other than HT (so not CR, LF, NUL), not DEL */
static uint8_t IS_REASON[256]; /* a reason phrase: HT, SP, VCHAR, obs-text */
static uint8_t IS_REGNAME[256]; /* the reg-name characters of _HOST */

static void
init_classes(void)
{
    static const char tchars[] = "-!#$%&'*+.^_`|~0123456789"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    static const char regname[] = "-._~!$&'()*+,;=%0123456789"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (int c = 0; c < 256; c++) {
        /* [!\"$-;=?-\[\]_a-z~] */
        IS_TARGET[c] = c == '!' || c == '"' || (c >= '$' && c <= ';') || c == '=' ||
                       (c >= '?' && c <= '[') || c == ']' || c == '_' || (c >= 'a' && c <= 'z') ||
                       c == '~';
        IS_VALUE[c] = !((c >= 0x00 && c <= 0x08) || (c >= 0x0a && c <= 0x1f) || c == 0x7f);
        IS_REASON[c] = c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
    }
    for (const char *t = tchars; *t; t++) {
        IS_TCHAR[(unsigned char)*t] = 1;
    }
    for (const char *t = regname; *t; t++) {
        IS_REGNAME[(unsigned char)*t] = 1;
    }
}

/* --- Shared objects, created at import ---------------------------------------------------------- */

/* proxy.h1.grammar.KNOWN_METHODS (tests/test_h1_native.py checks that the two lists agree). */
static const char *const METHOD_NAMES[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PURGE",
    "QUERY", "ACL", "BIND", "CHECKOUT", "COPY", "LINK", "LOCK", "MERGE", "MKACTIVITY",
    "MKCALENDAR", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "REBIND", "REPORT", "SEARCH", "UNBIND",
    "UNLINK", "UNLOCK",
};
#define N_METHODS (sizeof METHOD_NAMES / sizeof METHOD_NAMES[0])
#define CONNECT_INDEX 5

/* Header names common enough to share one bytes object (bytes are immutable), exact case. */
static const char *const COMMON_NAMES[] = {
    "Host", "host", "User-Agent", "user-agent", "Accept", "accept", "Accept-Encoding",
    "accept-encoding", "Accept-Language", "accept-language", "Connection", "connection",
    "Content-Length", "content-length", "Content-Type", "content-type", "Transfer-Encoding",
    "transfer-encoding", "Cache-Control", "cache-control", "Date", "date", "Server", "server",
    "Cookie", "cookie", "Set-Cookie", "set-cookie", "Referer", "referer", "Location", "location",
    "Last-Modified", "last-modified", "ETag", "etag", "Expires", "expires", "Vary", "vary",
    "Keep-Alive", "keep-alive", "Authorization", "authorization", "X-Forwarded-For",
    "x-forwarded-for", "Upgrade", "upgrade", "Origin", "origin", "Pragma", "pragma",
    "If-Modified-Since", "if-modified-since", "If-None-Match", "if-none-match", "Range", "range",
    "Content-Encoding", "content-encoding", "Accept-Ranges", "accept-ranges",
};
#define N_COMMON (sizeof COMMON_NAMES / sizeof COMMON_NAMES[0])

/* The framing fields, in proxy.h1.strict._FRAMING_NAMES; the keys of `found`. */
enum { F_HOST, F_CONTENT_LENGTH, F_TRANSFER_ENCODING, F_CONNECTION, F_UPGRADE, F_EXPECT, N_FIELDS };
static const char *const FIELD_NAMES[N_FIELDS] = {
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "expect",
};

static PyObject *methods[N_METHODS];
static PyObject *common[N_COMMON];
static size_t common_len[N_COMMON];
static PyObject *field_keys[N_FIELDS];
static PyObject *version_11, *version_10, *empty;

/* --- Scanning ------------------------------------------------------------------------------------ */

/* Lower-case ASCII comparison of the n bytes at p with the lower-case string s (of length n). */
static inline int
lower_eq(const unsigned char *p, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c + ('a' - 'A'));
        }
        if (c != (unsigned char)s[i]) {
            return 0;
        }
    }
    return 1;
}

/* Which framing field a header name is (case-insensitively), or -1. */
static inline int
field_of(const unsigned char *name, size_t n)
{
    int f;

    switch (n) {
    case 4: f = F_HOST; break;
    case 14: f = F_CONTENT_LENGTH; break;
    case 17: f = F_TRANSFER_ENCODING; break;
    case 10: f = F_CONNECTION; break;
    case 7: f = F_UPGRADE; break;
    case 6: f = F_EXPECT; break;
    default: return -1;
    }
    return lower_eq(name, n, FIELD_NAMES[f]) ? f : -1;
}

/* The header lines from p (just after the start line) up to the empty line included, within lim:
 * the end of the block, or NULL if they do not all match the grammar or there are more than
 * max_headers. *count is set to the number of header lines. */
static const unsigned char *
scan_fields(const unsigned char *p, const unsigned char *lim, Py_ssize_t max_headers,
            Py_ssize_t *count)
{
    Py_ssize_t n = 0;

    for (;;) {
        const unsigned char *start = p;

        if (lim - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            *count = n;
            return p + 2;
        }
        while (p < lim && IS_TCHAR[*p]) {
            p++;
        }
        if (p == start || p == lim || *p != ':') {
            return NULL;
        }
        p++;
        while (p < lim && IS_VALUE[*p]) {
            p++;
        }
        /* A value holds no CR or LF: the line ends at the first byte outside the value. */
        if (lim - p < 2 || p[0] != '\r' || p[1] != '\n') {
            return NULL;
        }
        p += 2;
        if (++n > max_headers) {
            return NULL;
        }
    }
}

static PyObject *
name_object(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < N_COMMON; i++) {
        if (common_len[i] == n && memcmp(COMMON_NAMES[i], p, n) == 0) {
            return Py_NewRef(common[i]);
        }
    }
    return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
}

typedef struct {
    int hop; /* a hop-by-hop header other than Transfer-Encoding and Connection was seen */
    const unsigned char *conn_line, *conn_end; /* the first Connection line, CRLF included */
    Py_ssize_t count[N_FIELDS];
    const unsigned char *value[N_FIELDS]; /* the first value of each field, and its length */
    size_t len[N_FIELDS];
} fields_t;

/* Whether a header name is hop-by-hop (proxy.message.HOP_BY_HOP) other than Transfer-Encoding and
 * Connection (those two are framing fields, counted by field_of). */
static inline int
hop_by_hop(const unsigned char *name, size_t n)
{
    switch (n) {
    case 2: return lower_eq(name, 2, "te");
    case 7: return lower_eq(name, 7, "trailer") || lower_eq(name, 7, "upgrade");
    case 10: return lower_eq(name, 10, "keep-alive");
    case 16: return lower_eq(name, 16, "proxy-connection");
    case 18: return lower_eq(name, 18, "proxy-authenticate");
    case 19: return lower_eq(name, 19, "proxy-authorization");
    default: return 0;
    }
}

/* Build the header list of the `count` lines in [p, end) (already validated by scan_fields), and
 * note the framing fields in *fl. */
static PyObject *
build_headers(const unsigned char *p, const unsigned char *end, Py_ssize_t count, fields_t *fl)
{
    PyObject *headers = PyList_New(count);

    if (headers == NULL) {
        return NULL;
    }
    memset(fl, 0, sizeof *fl);
    for (Py_ssize_t i = 0; i < count; i++) {
        /* The line is valid: a token, ':', the value, CRLF; neither part holds the other's end. */
        const unsigned char *colon = memchr(p, ':', (size_t)(end - p)), *v = colon + 1, *cr, *e;
        size_t name_len = (size_t)(colon - p);
        PyObject *name, *value, *pair;
        int f;

        e = cr = memchr(v, '\r', (size_t)(end - v));
        while (v < e && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (e > v && (e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }
        f = field_of(p, name_len);
        if (!fl->hop && hop_by_hop(p, name_len)) {
            fl->hop = 1;
        }
        if (f >= 0 && fl->count[f]++ == 0) {
            fl->value[f] = v;
            fl->len[f] = (size_t)(e - v);
            if (f == F_CONNECTION) {
                fl->conn_line = p;
                fl->conn_end = cr + 2;
            }
        }
        name = name_object(p, name_len);
        value = e == v ? Py_NewRef(empty) : PyBytes_FromStringAndSize((const char *)v, e - v);
        pair = name == NULL || value == NULL ? NULL : PyTuple_New(2);
        if (pair == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(value);
            Py_DECREF(headers);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        PyList_SET_ITEM(headers, i, pair);
        p = cr + 2;
    }
    return headers;
}

/* `found` for headers: proxy.h1.strict._framing_fields, for the heads that are not plain. */
static PyObject *
framing_fields(PyObject *headers)
{
    PyObject *found = PyDict_New();

    if (found == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i), *name = PyTuple_GET_ITEM(pair, 0);
        PyObject *value = PyTuple_GET_ITEM(pair, 1), *values;
        int f = field_of((const unsigned char *)PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));

        if (f < 0) {
            continue;
        }
        values = PyDict_GetItemWithError(found, field_keys[f]);
        if (values == NULL) {
            if (PyErr_Occurred()) {
                goto fail;
            }
            values = PyList_New(0);
            if (values == NULL) {
                goto fail;
            }
            if (PyDict_SetItem(found, field_keys[f], values) < 0) {
                Py_DECREF(values);
                goto fail;
            }
            Py_DECREF(values); /* the dict holds it */
        }
        if (PyList_Append(values, value) < 0) {
            goto fail;
        }
    }
    return found;

fail:
    Py_DECREF(found);
    return NULL;
}

/* The facts of a plain head (see the top of this file), or 0 if it is not plain. */
typedef struct {
    long long length; /* -1: no Content-Length */
    int chunked;
    int connection; /* 0 absent, 1 close, 2 keep-alive */
} plain_t;

static int
plain_framing(const fields_t *fl, int v11, plain_t *out)
{
    out->length = -1;
    out->chunked = 0;
    out->connection = 0;
    if (fl->count[F_CONTENT_LENGTH] > 1 || fl->count[F_TRANSFER_ENCODING] > 1 ||
        fl->count[F_CONNECTION] > 1) {
        return 0;
    }
    if (fl->count[F_CONTENT_LENGTH]) {
        size_t n = fl->len[F_CONTENT_LENGTH];
        const unsigned char *v = fl->value[F_CONTENT_LENGTH];
        long long length = 0;

        if (n < 1 || n > 15) {
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i] < '0' || v[i] > '9') {
                return 0;
            }
            length = length * 10 + (v[i] - '0');
        }
        out->length = length;
    }
    if (fl->count[F_TRANSFER_ENCODING]) {
        if (!v11 || fl->count[F_CONTENT_LENGTH] || fl->len[F_TRANSFER_ENCODING] != 7 ||
            memcmp(fl->value[F_TRANSFER_ENCODING], "chunked", 7) != 0) {
            return 0;
        }
        out->chunked = 1;
    }
    if (fl->count[F_CONNECTION]) {
        size_t n = fl->len[F_CONNECTION];
        const unsigned char *v = fl->value[F_CONNECTION];

        if (n == 5 && lower_eq(v, 5, "close")) {
            out->connection = 1;
        }
        else if (n == 10 && lower_eq(v, 10, "keep-alive")) {
            out->connection = 2;
        }
        else {
            return 0;
        }
    }
    return 1;
}

/* Whether a Host value is in the simple form reg-name [ ":" *DIGIT ] (a subset of _HOST). */
static int
simple_host(const unsigned char *v, size_t n)
{
    size_t i = 0;

    while (i < n && IS_REGNAME[v[i]]) {
        i++;
    }
    if (i == n) {
        return 1;
    }
    if (v[i] != ':') {
        return 0;
    }
    for (i++; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return 0;
        }
    }
    return 1;
}

/* --- The functions ------------------------------------------------------------------------------ */

typedef struct {
    Py_buffer view;
    const unsigned char *base, *p, *lim;
    Py_ssize_t max_headers;
} input_t;

/* Convert the arguments (the integers first: __index__ may run any code), then take the buffer.
 * Returns -1 with an exception set. */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, input_t *in)
{
    Py_ssize_t pos, max_head, max_headers;

    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly 4 arguments (%zd given)", fname, nargs);
        return -1;
    }
    pos = PyNumber_AsSsize_t(args[1], PyExc_ValueError);
    if (pos == -1 && PyErr_Occurred()) {
        return -1;
    }
    max_head = PyNumber_AsSsize_t(args[2], PyExc_ValueError);
    if (max_head == -1 && PyErr_Occurred()) {
        return -1;
    }
    max_headers = PyNumber_AsSsize_t(args[3], PyExc_ValueError);
    if (max_headers == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (max_head < 0 || max_headers < 0) {
        PyErr_SetString(PyExc_ValueError, "max_head and max_headers must not be negative");
        return -1;
    }
    if (PyObject_GetBuffer(args[0], &in->view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (pos < 0 || pos > in->view.len) {
        PyErr_Format(PyExc_ValueError, "pos %zd out of range for a buffer of %zd bytes", pos,
                     in->view.len);
        PyBuffer_Release(&in->view);
        return -1;
    }
    in->base = (const unsigned char *)in->view.buf;
    in->p = in->base + pos;
    /* The block must end within max_head bytes of pos. */
    in->lim = in->view.len - pos > max_head ? in->p + max_head : in->base + in->view.len;
    in->max_headers = max_headers;
    return 0;
}

/* The 10-tuple both functions return; steals the references it is given (NULL: fail); `wire_obj`
 * is wire_of's answer. */
static PyObject *
result(Py_ssize_t end, PyObject *a, PyObject *b, PyObject *version, PyObject *headers,
       PyObject *found, const plain_t *pl, PyObject *wire_obj)
{
    PyObject *length = NULL, *out = NULL;

    if (a == NULL || b == NULL || headers == NULL || wire_obj == NULL) {
        goto done;
    }
    if (found != NULL) {
        length = Py_NewRef(Py_None);
    }
    else if (pl->length < 0) {
        length = Py_NewRef(Py_None);
    }
    else {
        length = PyLong_FromLongLong(pl->length);
        if (length == NULL) {
            goto done;
        }
    }
    out = PyTuple_New(10);
    if (out == NULL) {
        goto done;
    }
    PyTuple_SET_ITEM(out, 9, wire_obj);
    wire_obj = NULL;
    PyTuple_SET_ITEM(out, 0, PyLong_FromSsize_t(end));
    if (PyTuple_GET_ITEM(out, 0) == NULL) {
        Py_CLEAR(out);
        goto done;
    }
    PyTuple_SET_ITEM(out, 1, a);
    PyTuple_SET_ITEM(out, 2, b);
    PyTuple_SET_ITEM(out, 3, Py_NewRef(version));
    PyTuple_SET_ITEM(out, 4, headers);
    PyTuple_SET_ITEM(out, 5, found != NULL ? found : Py_NewRef(Py_None));
    PyTuple_SET_ITEM(out, 6, length);
    PyTuple_SET_ITEM(out, 7, Py_NewRef(found == NULL && pl->chunked ? Py_True : Py_False));
    PyTuple_SET_ITEM(out, 8, PyLong_FromLong(found == NULL ? pl->connection : 0));
    if (PyTuple_GET_ITEM(out, 8) == NULL) {
        Py_CLEAR(out);
    }
    return out;

done:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(headers);
    Py_XDECREF(found);
    Py_XDECREF(length);
    Py_XDECREF(wire_obj);
    return NULL;
}

/* `wire` (see the top of this file) for a block [start, end) whose header fields are `fl`: None
 * unless `bare`; else the block without its Connection line, if any. NULL: fail. */
static PyObject *
wire_of(int bare, const unsigned char *start, const unsigned char *end, const fields_t *fl)
{
    PyObject *out;
    char *w;

    if (!bare) {
        return Py_NewRef(Py_None);
    }
    if (fl->count[F_CONNECTION] == 0) {
        return PyBytes_FromStringAndSize((const char *)start, end - start);
    }
    out = PyBytes_FromStringAndSize(NULL, (end - start) - (fl->conn_end - fl->conn_line));
    if (out == NULL) {
        return NULL;
    }
    w = PyBytes_AS_STRING(out);
    memcpy(w, start, (size_t)(fl->conn_line - start));
    memcpy(w + (fl->conn_line - start), fl->conn_end, (size_t)(end - fl->conn_end));
    return out;
}

/* "HTTP/1.1" or "HTTP/1.0" at p (within lim): the version object, or NULL. */
static inline PyObject *
http_version(const unsigned char *p, const unsigned char *lim)
{
    if (lim - p < 8 || memcmp(p, "HTTP/1.", 7) != 0) {
        return NULL;
    }
    return p[7] == '1' ? version_11 : p[7] == '0' ? version_10 : NULL;
}

static PyObject *
parse_request(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    input_t in;
    const unsigned char *p, *lim, *method, *target, *fields, *end;
    size_t method_len, target_len;
    Py_ssize_t count, m;
    PyObject *version, *headers, *found = NULL, *target_obj;
    fields_t fl;
    plain_t pl;
    int plain;

    if (parse_args("parse_request", args, nargs, &in) < 0) {
        return NULL;
    }
    p = method = in.p;
    lim = in.lim;
    while (p < lim && IS_TCHAR[*p]) {
        p++;
    }
    if (p == method || p == lim || *p != ' ') {
        goto none;
    }
    method_len = (size_t)(p - method);
    target = ++p;
    while (p < lim && IS_TARGET[*p]) {
        p++;
    }
    if (p == target || p == lim || *p != ' ') {
        goto none;
    }
    target_len = (size_t)(p - target);
    p++;
    version = http_version(p, lim);
    if (version == NULL || lim - p < 10 || p[8] != '\r' || p[9] != '\n') {
        goto none;
    }
    fields = p + 10;
    end = scan_fields(fields, lim, in.max_headers, &count);
    if (end == NULL) {
        goto none;
    }
    for (m = 0; m < (Py_ssize_t)N_METHODS; m++) {
        if (PyBytes_GET_SIZE(methods[m]) == (Py_ssize_t)method_len &&
            memcmp(PyBytes_AS_STRING(methods[m]), method, method_len) == 0) {
            break;
        }
    }
    if (m == (Py_ssize_t)N_METHODS) {
        goto none; /* 501, decided in Python */
    }
    headers = build_headers(fields, end, count, &fl);
    if (headers == NULL) {
        goto fail;
    }
    plain = m != CONNECT_INDEX && target[0] == '/' && fl.count[F_EXPECT] == 0 &&
            plain_framing(&fl, version == version_11, &pl);
    if (plain) {
        if (fl.count[F_HOST] == 1) {
            plain = simple_host(fl.value[F_HOST], fl.len[F_HOST]);
        }
        else {
            plain = fl.count[F_HOST] == 0 && version == version_10;
        }
    }
    if (!plain) {
        found = framing_fields(headers);
        if (found == NULL) {
            Py_DECREF(headers);
            goto fail;
        }
    }
    target_obj = PyBytes_FromStringAndSize((const char *)target, (Py_ssize_t)target_len);
    {
        int bare = plain && version == version_11 && !fl.hop;
        PyObject *out = result(end - in.base, Py_NewRef(methods[m]), target_obj, version, headers,
                               found, &pl, wire_of(bare, in.p, end, &fl));

        PyBuffer_Release(&in.view); /* after the last read of its bytes */
        return out;
    }

none:
    PyBuffer_Release(&in.view);
    Py_RETURN_NONE;

fail:
    PyBuffer_Release(&in.view);
    return NULL;
}

static PyObject *
parse_response(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    input_t in;
    const unsigned char *p, *lim, *reason, *reason_end, *fields, *end;
    Py_ssize_t count;
    PyObject *version, *headers, *found = NULL, *reason_obj, *out;
    fields_t fl;
    plain_t pl;
    int status, plain, bare;

    if (parse_args("parse_response", args, nargs, &in) < 0) {
        return NULL;
    }
    p = in.p;
    lim = in.lim;
    /* HTTP/1\.[01] [1-9][0-9][0-9](?: [\t \x21-\x7e\x80-\xff]*)?\r\n */
    version = http_version(p, lim);
    if (version == NULL || lim - p < 12 || p[8] != ' ' || p[9] < '1' || p[9] > '9' ||
        p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9') {
        goto none;
    }
    status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    p += 12;
    reason = reason_end = p;
    if (p < lim && *p == ' ') {
        reason = ++p;
        while (p < lim && IS_REASON[*p]) {
            p++;
        }
        reason_end = p;
        while (reason_end > reason && (reason_end[-1] == ' ' || reason_end[-1] == '\t')) {
            reason_end--;
        }
    }
    if (lim - p < 2 || p[0] != '\r' || p[1] != '\n') {
        goto none;
    }
    fields = p + 2;
    end = scan_fields(fields, lim, in.max_headers, &count);
    if (end == NULL) {
        goto none;
    }
    headers = build_headers(fields, end, count, &fl);
    if (headers == NULL) {
        goto fail;
    }
    plain = plain_framing(&fl, version == version_11, &pl);
    if (!plain) {
        found = framing_fields(headers);
        if (found == NULL) {
            Py_DECREF(headers);
            goto fail;
        }
    }
    reason_obj = reason_end == reason
                     ? Py_NewRef(empty)
                     : PyBytes_FromStringAndSize((const char *)reason, reason_end - reason);
    /* bare: the reason phrase non-empty and nothing stripped after it (p is the end of the line) */
    bare = plain && version == version_11 && !fl.hop && reason_end > reason && reason_end == p;
    out = result(end - in.base, PyLong_FromLong(status), reason_obj, version, headers, found, &pl,
                 wire_of(bare, in.p, end, &fl));
    PyBuffer_Release(&in.view); /* after the last read of its bytes */
    return out;

none:
    PyBuffer_Release(&in.view);
    Py_RETURN_NONE;

fail:
    PyBuffer_Release(&in.view);
    return NULL;
}

/* Whether a header name is one the writer always drops (writer._ALWAYS_DROPPED). */
static inline int
always_dropped(const unsigned char *name, size_t n)
{
    if (hop_by_hop(name, n)) {
        return 1;
    }
    switch (n) {
    case 10: return lower_eq(name, 10, "connection");
    case 14: return lower_eq(name, 14, "content-length");
    case 17: return lower_eq(name, 17, "transfer-encoding");
    default: return 0;
    }
}

static PyObject *
fields(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *headers, *drop, *out, *result;
    Py_ssize_t n, total = 0, kept = 0;
    char *w;
    unsigned char *keep;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fields(headers, drop, /) takes exactly 2 arguments");
        return NULL;
    }
    if (!PyList_Check(args[0]) || !PyFrozenSet_Check(args[1])) {
        Py_RETURN_NONE; /* another sequence or set: the Python loop */
    }
    headers = args[0];
    drop = args[1];
    n = PyList_GET_SIZE(headers);
    keep = PyMem_Malloc(n > 0 ? (size_t)n : 1);
    if (keep == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i), *name, *value;
        const unsigned char *v;
        Py_ssize_t vn, nn;

        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            goto fallback;
        }
        name = PyTuple_GET_ITEM(pair, 0);
        value = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) {
            goto fallback;
        }
        nn = PyBytes_GET_SIZE(name);
        if (nn == 10 && lower_eq((const unsigned char *)PyBytes_AS_STRING(name), 10, "connection")) {
            goto fallback; /* its tokens may nominate more names: the Python loop knows the rule */
        }
        keep[i] = !always_dropped((const unsigned char *)PyBytes_AS_STRING(name), (size_t)nn);
        if (keep[i] && PySet_GET_SIZE(drop) > 0) {
            /* the rare case (a Connection that nominates, a caller's drop): look the name up */
            PyObject *lower = PyObject_CallMethod(name, "lower", NULL);
            int found;

            if (lower == NULL) {
                PyMem_Free(keep);
                return NULL;
            }
            found = PySet_Contains(drop, lower);
            Py_DECREF(lower);
            if (found < 0) {
                PyMem_Free(keep);
                return NULL;
            }
            keep[i] = !found;
        }
        if (!keep[i]) {
            continue;
        }
        v = (const unsigned char *)PyBytes_AS_STRING(value);
        vn = PyBytes_GET_SIZE(value);
        for (Py_ssize_t j = 0; j < vn; j++) {
            if (v[j] == '\r' || v[j] == '\n' || v[j] == 0) {
                goto fallback;
            }
        }
        /* names come from a parser (tokens) or a rule; one with CR/LF/NUL goes the Python way */
        if (memchr(PyBytes_AS_STRING(name), '\r', (size_t)nn) ||
            memchr(PyBytes_AS_STRING(name), '\n', (size_t)nn) ||
            memchr(PyBytes_AS_STRING(name), 0, (size_t)nn)) {
            goto fallback;
        }
        total += nn + 2 + vn + 2;
        kept++;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        PyMem_Free(keep);
        return NULL;
    }
    w = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i), *name, *value;

        if (!keep[i]) {
            continue;
        }
        name = PyTuple_GET_ITEM(pair, 0);
        value = PyTuple_GET_ITEM(pair, 1);
        memcpy(w, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        w += PyBytes_GET_SIZE(name);
        *w++ = ':';
        *w++ = ' ';
        memcpy(w, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        w += PyBytes_GET_SIZE(value);
        *w++ = '\r';
        *w++ = '\n';
    }
    PyMem_Free(keep);
    result = Py_BuildValue("(Nn)", out, kept);
    return result;

fallback:
    PyMem_Free(keep);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"fields", (PyCFunction)(void (*)(void))fields, METH_FASTCALL,
     PyDoc_STR("fields($module, headers, drop, /)\n--\n\n"
               "The writer's header lines: (bytes, count) of the pairs whose lower-case name is "
               "not hop-by-hop, Content-Length, Transfer-Encoding nor in drop; None when a value "
               "holds CR, LF or NUL (see ext/h1head.c).")},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     PyDoc_STR("parse_request($module, buf, pos, max_head, max_headers, /)\n--\n\n"
               "The request head block at buf[pos], if complete, valid and within the limits: "
               "(end, method, target, version, headers, found, length, chunked, connection, wire); "
               "otherwise None. found is None for a plain head (see ext/h1head.c).")},
    {"parse_response", (PyCFunction)(void (*)(void))parse_response, METH_FASTCALL,
     PyDoc_STR("parse_response($module, buf, pos, max_head, max_headers, /)\n--\n\n"
               "The response head block at buf[pos], if complete, valid and within the limits: "
               "(end, status, reason, version, headers, found, length, chunked, connection, wire); "
               "otherwise None. found is None for a plain head (see ext/h1head.c).")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef h1head_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxy._h1head",
    .m_doc = PyDoc_STR("The HTTP/1 head scanner of the native engine."),
    .m_size = -1,
    .m_methods = module_methods,
};

static PyObject *
bytes_of(const char *s)
{
    return PyBytes_FromStringAndSize(s, (Py_ssize_t)strlen(s));
}

PyMODINIT_FUNC
PyInit__h1head(void)
{
    PyObject *m, *names;

    init_classes();
    for (size_t i = 0; i < N_METHODS; i++) {
        if (methods[i] == NULL && (methods[i] = bytes_of(METHOD_NAMES[i])) == NULL) {
            return NULL;
        }
    }
    for (size_t i = 0; i < N_COMMON; i++) {
        common_len[i] = strlen(COMMON_NAMES[i]);
        if (common[i] == NULL && (common[i] = bytes_of(COMMON_NAMES[i])) == NULL) {
            return NULL;
        }
    }
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (field_keys[i] == NULL && (field_keys[i] = bytes_of(FIELD_NAMES[i])) == NULL) {
            return NULL;
        }
    }
    if ((version_11 == NULL && (version_11 = bytes_of("1.1")) == NULL) ||
        (version_10 == NULL && (version_10 = bytes_of("1.0")) == NULL) ||
        (empty == NULL && (empty = bytes_of("")) == NULL)) {
        return NULL;
    }
    m = PyModule_Create(&h1head_module);
    if (m == NULL) {
        return NULL;
    }
    names = PyTuple_New((Py_ssize_t)N_METHODS);
    if (names == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    for (size_t i = 0; i < N_METHODS; i++) {
        PyTuple_SET_ITEM(names, (Py_ssize_t)i, Py_NewRef(methods[i]));
    }
    if (PyModule_AddObject(m, "METHODS", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
