/* proxy._chunked: the hot loop of the strict chunked decoder (proxy.h1.bodies._Chunked).
 *
 * scan(buf, pos, state, remaining, max_line, /) -> (data, pos, state, remaining)
 *
 * Decodes as many chunks of a chunked body as it can from buf[pos:], and returns the payload of
 * all of them joined into one bytes object, with the position and state where it stopped. It is
 * the C twin of proxy.h1.bodies.scan_chunks_python, and must return exactly what that function
 * returns for every input (tests/test_h1_chunked.py checks both on the same cases and on random
 * input).
 *
 * States (the caller's, passed in and returned):
 *   0 SIZE  at the start of a chunk-size line;
 *   1 DATA  inside chunk data, `remaining` bytes of it still to come;
 *   2 CRLF  after chunk data, expecting its CRLF.
 * `remaining` is the number of chunk-data bytes still due in DATA; it counts down to 0 as the data
 * is consumed, is set by each chunk line accepted, and is otherwise returned as it was passed.
 *
 * What it accepts, and nothing more (anything else stops the scan *before* the offending line or
 * CRLF, with the bytes left for the Python decoder, which then waits for more input or raises the
 * ProtocolError it always raised):
 *   - a chunk line: 1-15 hex digits, then any number of chunk extensions, then optional BWS, then
 *     CRLF. The grammar is exactly proxy.h1.grammar._CHUNK_LINE:
 *         HEX{1,15} ( [ \t]* ';' [ \t]* token ( [ \t]* '=' [ \t]* ( token | quoted-string ) )? )*
 *         [ \t]*
 *     and the line, CRLF included, must end within max_line bytes of its start (the Python
 *     decoder looks for its CRLF within limits.max_head bytes; it must see the same line).
 *     The deterministic parse below accepts the same language as the regular expression, because
 *     a token, a quoted-string and BWS never contain CR, ';', '=' or each other's first byte.
 *     A size of 0 (the last chunk: trailers follow) stops the scan at its line.
 *   - chunk data: any bytes; a chunk cut by the end of buf leaves state DATA.
 *   - the CRLF after chunk data: only when both bytes are there and are CR LF.
 *
 * Arguments: buf exports a contiguous buffer; 0 <= pos <= len(buf); state in {0, 1, 2};
 * 0 <= remaining < 2**63; max_line >= 0. Anything else raises ValueError (TypeError for the
 * wrong types). The GIL is held throughout; a call touches at most len(buf) - pos bytes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

enum { ST_SIZE = 0, ST_DATA = 1, ST_CRLF = 2 };

#define MAX_HEX_DIGITS 15

/* Byte classes, filled once at import. */
static int8_t HEX_VALUE[256];      /* 0-15, or -1 */
static uint8_t IS_TCHAR[256];      /* RFC 9110 token characters */
static uint8_t IS_QDTEXT[256];     /* HT, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text */
static uint8_t IS_QUOTED_PAIR[256]; /* what may follow a backslash: HT, SP-0x7E, obs-text */

static void
init_classes(void)
{
    static const char tchars[] = "-!#$%&'*+.^_`|~0123456789"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (int c = 0; c < 256; c++) {
        HEX_VALUE[c] = -1;
        IS_QDTEXT[c] = c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5B) ||
                       (c >= 0x5D && c <= 0x7E) || c >= 0x80;
        IS_QUOTED_PAIR[c] = c == '\t' || (c >= 0x20 && c <= 0x7E) || c >= 0x80;
    }
    for (int c = '0'; c <= '9'; c++) {
        HEX_VALUE[c] = (int8_t)(c - '0');
    }
    for (int c = 0; c < 6; c++) {
        HEX_VALUE['a' + c] = HEX_VALUE['A' + c] = (int8_t)(10 + c);
    }
    for (const char *t = tchars; *t; t++) {
        IS_TCHAR[(unsigned char)*t] = 1;
    }
}

static inline const unsigned char *
skip_bws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    return p;
}

/* One or more token characters at p: the end of the token, or NULL if there is none. */
static inline const unsigned char *
token(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *start = p;

    while (p < end && IS_TCHAR[*p]) {
        p++;
    }
    return p == start ? NULL : p;
}

/* A quoted-string starting at p (which is '"'): the byte after the closing quote, or NULL. */
static inline const unsigned char *
quoted_string(const unsigned char *p, const unsigned char *end)
{
    for (p++; p < end; p++) {
        if (*p == '"') {
            return p + 1;
        }
        if (*p == '\\') {
            if (++p == end || !IS_QUOTED_PAIR[*p]) {
                return NULL;
            }
        }
        else if (!IS_QDTEXT[*p]) {
            return NULL;
        }
    }
    return NULL;
}

/* The chunk line at p, CRLF included, if it is complete and valid and no longer than max_line:
 * returns the byte after its CRLF and sets *size. Otherwise NULL: the caller stops there. */
static const unsigned char *
chunk_line(const unsigned char *p, const unsigned char *end, Py_ssize_t max_line, uint64_t *size)
{
    const unsigned char *q = p, *r;
    uint64_t value = 0;
    int digits = 0;

    if (end - p > max_line) {
        end = p + max_line; /* the CRLF must lie within the first max_line bytes */
    }
    while (q < end && HEX_VALUE[*q] >= 0) {
        if (++digits > MAX_HEX_DIGITS) {
            return NULL;
        }
        value = value << 4 | (uint64_t)HEX_VALUE[*q++];
    }
    if (digits == 0) {
        return NULL;
    }
    for (;;) {
        q = skip_bws(q, end);
        if (q == end || *q != ';') {
            break;
        }
        q = token(skip_bws(q + 1, end), end);
        if (q == NULL) {
            return NULL;
        }
        r = skip_bws(q, end);
        if (r < end && *r == '=') {
            r = skip_bws(r + 1, end);
            q = r < end && *r == '"' ? quoted_string(r, end) : token(r, end);
            if (q == NULL) {
                return NULL;
            }
        }
    }
    if (end - q < 2 || q[0] != '\r' || q[1] != '\n') {
        return NULL;
    }
    *size = value;
    return q + 2;
}

/* The payload collected by one call: a first segment kept as a pointer (no copy while it is the
 * only one), then a bytes object once there are two. */
typedef struct {
    PyObject *owner;          /* the exporter of buf, to return it whole when that is the payload */
    const unsigned char *base; /* buf's first byte */
    Py_ssize_t nbuf;
    const unsigned char *first; /* first segment, until `out` exists */
    Py_ssize_t first_len;
    PyObject *out;            /* joined payload, capacity `cap`, `len` bytes used */
    Py_ssize_t len, cap;
} payload_t;

static int
payload_add(payload_t *pl, const unsigned char *p, Py_ssize_t n)
{
    if (n == 0) {
        return 0;
    }
    if (pl->first == NULL && pl->out == NULL) {
        pl->first = p;
        pl->first_len = n;
        return 0;
    }
    if (pl->out == NULL) {
        /* Everything still to come lies in buf after the first segment: an upper bound. */
        pl->cap = pl->first_len + (pl->base + pl->nbuf - p);
        pl->out = PyBytes_FromStringAndSize(NULL, pl->cap);
        if (pl->out == NULL) {
            return -1;
        }
        memcpy(PyBytes_AS_STRING(pl->out), pl->first, (size_t)pl->first_len);
        pl->len = pl->first_len;
    }
    memcpy(PyBytes_AS_STRING(pl->out) + pl->len, p, (size_t)n);
    pl->len += n;
    return 0;
}

/* The joined payload as a new reference (b"" when there is none), or NULL with an exception. */
static PyObject *
payload_finish(payload_t *pl)
{
    if (pl->out != NULL) {
        if (pl->len != pl->cap && _PyBytes_Resize(&pl->out, pl->len) < 0) {
            return NULL;
        }
        return pl->out;
    }
    if (pl->first == NULL) {
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    if (pl->first == pl->base && pl->first_len == pl->nbuf && PyBytes_CheckExact(pl->owner)) {
        return Py_NewRef(pl->owner); /* the whole of an immutable bytes: no copy */
    }
    return PyBytes_FromStringAndSize((const char *)pl->first, pl->first_len);
}

static int
parse_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *pos, int *state,
           long long *remaining, Py_ssize_t *max_line)
{
    long st;

    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "scan() takes exactly 5 arguments (%zd given)", nargs);
        return -1;
    }
    *pos = PyNumber_AsSsize_t(args[1], PyExc_ValueError);
    if (*pos == -1 && PyErr_Occurred()) {
        return -1;
    }
    st = PyLong_AsLong(args[2]);
    if (st == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (st < ST_SIZE || st > ST_CRLF) {
        PyErr_Format(PyExc_ValueError, "invalid scan state %ld", st);
        return -1;
    }
    *state = (int)st;
    *remaining = PyLong_AsLongLong(args[3]);
    if (*remaining == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
    }
    if (*remaining < 0) {
        PyErr_SetString(PyExc_ValueError, "remaining out of range");
        return -1;
    }
    *max_line = PyNumber_AsSsize_t(args[4], PyExc_ValueError);
    if (*max_line == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (*max_line < 0) {
        PyErr_SetString(PyExc_ValueError, "max_line must not be negative");
        return -1;
    }
    return 0;
}

static PyObject *
scan(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos, max_line;
    int state;
    long long remaining;
    Py_buffer view;
    payload_t pl;
    const unsigned char *p, *end, *next;
    uint64_t size;
    PyObject *data;

    /* The operands are converted before the buffer is taken: __index__ may run any code. */
    if (parse_args(args, nargs, &pos, &state, &remaining, &max_line) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (pos < 0 || pos > view.len) {
        PyErr_Format(PyExc_ValueError, "pos %zd out of range for a buffer of %zd bytes", pos,
                     view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    memset(&pl, 0, sizeof pl);
    pl.owner = view.obj;
    pl.base = (const unsigned char *)view.buf;
    pl.nbuf = view.len;
    p = pl.base + pos;
    end = pl.base + view.len;

    while (p < end) {
        if (state == ST_DATA) {
            Py_ssize_t take = end - p < remaining ? end - p : (Py_ssize_t)remaining;
            if (payload_add(&pl, p, take) < 0) {
                goto fail;
            }
            p += take;
            remaining -= take;
            if (remaining) {
                break;
            }
            state = ST_CRLF;
        }
        else if (state == ST_CRLF) {
            if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
                break;
            }
            p += 2;
            state = ST_SIZE;
        }
        else {
            next = chunk_line(p, end, max_line, &size);
            if (next == NULL || size == 0) {
                break;
            }
            p = next;
            state = ST_DATA;
            remaining = (long long)size;
        }
    }
    data = payload_finish(&pl);
    if (data == NULL) {
        goto fail;
    }
    pos = p - pl.base;
    PyBuffer_Release(&view);
    return Py_BuildValue("(NniL)", data, pos, state, remaining);

fail:
    Py_XDECREF(pl.out);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     PyDoc_STR("scan($module, buf, pos, state, remaining, max_line, /)\n--\n\n"
               "Decode the chunks of buf[pos:] that need no decision: returns (data, pos, state, "
               "remaining), data being every payload byte decoded, joined. States: 0 chunk-size "
               "line, 1 chunk data (remaining bytes), 2 CRLF after the data. Stops at the last "
               "chunk, an incomplete or invalid line, and a missing or invalid CRLF.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef chunked_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxy._chunked",
    .m_doc = PyDoc_STR("The fast path of the strict HTTP/1.1 chunked decoder."),
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__chunked(void)
{
    PyObject *m;

    init_classes();
    m = PyModule_Create(&chunked_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "SIZE", ST_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "DATA", ST_DATA) < 0 ||
        PyModule_AddIntConstant(m, "CRLF", ST_CRLF) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
