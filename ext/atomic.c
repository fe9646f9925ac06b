/*
 * proxy._atomic: 64-bit atomic operations on a word inside a writable buffer.
 *
 * Theory of operation
 * -------------------
 * The shared-memory table (proxy.shm) is an mmap of a posix_ipc segment that every worker maps.
 * Its counters are 8-byte little-endian signed words. This module reads and changes one such word
 * with the compiler's __atomic builtins, all sequentially consistent, so that several processes can
 * update the same word without a lock (a process that dies mid-operation cannot leave anything held).
 *
 * Two ways in:
 *   - module functions, load(buf, off) and friends: acquire the buffer, operate, release it. Safe
 *     for any exporter at any time, costs one PyObject_GetBuffer/PyBuffer_Release pair per call.
 *   - View(buf): acquires the buffer once and keeps it until close() (or deallocation); its methods
 *     take only the offset. This is the hot-path form. While a View is open, the exporter cannot
 *     be resized or closed (mmap.close() raises BufferError), so the memory cannot go away under it.
 *
 * Contract, for every operation:
 *   - buf supports the buffer protocol with PyBUF_WRITABLE (mmap.mmap, bytearray, writable
 *     memoryview); otherwise BufferError or TypeError from the buffer protocol.
 *   - off is an int, 0 <= off <= len(buf) - 8 and off % 8 == 0, and the word's address is 8-byte
 *     aligned (ValueError otherwise; an mmap is always page-aligned).
 *   - values are ints in [-2**63, 2**63) (OverflowError otherwise). fetch_add wraps around in two's
 *     complement like C, it does not raise on overflow.
 *   - every operation is __ATOMIC_SEQ_CST, and lock-free: the build fails where 8-byte atomics would
 *     need libatomic's process-local locks, which would not exclude other processes.
 * The GIL is held throughout; no operation blocks.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

_Static_assert(sizeof(uint64_t) == 8, "a word is 8 bytes");
_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0),
               "8-byte atomics must be lock-free to work across processes");
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the shared table is little-endian; the pure-Python fallback must be used elsewhere"
#endif

#define WORD 8
#define ORDER __ATOMIC_SEQ_CST

/* One table drives both entry points: an operation is a name and a number of int64 operands
 * after the offset. */
typedef enum { OP_LOAD, OP_STORE, OP_EXCHANGE, OP_FETCH_ADD, OP_FETCH_MAX, OP_CAS } op_t;

static const struct {
    const char *name;
    Py_ssize_t nvalues;
} OPS[] = {
    [OP_LOAD] = {"load", 0},           [OP_STORE] = {"store", 1},
    [OP_EXCHANGE] = {"exchange", 1},   [OP_FETCH_ADD] = {"fetch_add", 1},
    [OP_FETCH_MAX] = {"fetch_max", 1}, [OP_CAS] = {"compare_exchange", 2},
};

#define MAX_VALUES 2

/* The word is handled as uint64_t so that fetch_add wraps with defined behaviour; the conversion
 * back to int64_t is modular on every compiler this builds with (gcc, clang). */
static inline PyObject *
apply(op_t op, uint64_t *word, const int64_t *v)
{
    uint64_t prev;

    switch (op) {
    case OP_LOAD:
        return PyLong_FromLongLong((int64_t)__atomic_load_n(word, ORDER));
    case OP_STORE:
        __atomic_store_n(word, (uint64_t)v[0], ORDER);
        Py_RETURN_NONE;
    case OP_EXCHANGE:
        return PyLong_FromLongLong((int64_t)__atomic_exchange_n(word, (uint64_t)v[0], ORDER));
    case OP_FETCH_ADD:
        return PyLong_FromLongLong((int64_t)__atomic_fetch_add(word, (uint64_t)v[0], ORDER));
    case OP_FETCH_MAX:
        /* On failure the CAS refreshes prev, so the loop ends once prev >= v[0] or the store won. */
        prev = __atomic_load_n(word, ORDER);
        while ((int64_t)prev < v[0] &&
               !__atomic_compare_exchange_n(word, &prev, (uint64_t)v[0], 1, ORDER, ORDER)) {
        }
        return PyLong_FromLongLong((int64_t)prev);
    case OP_CAS:
        prev = (uint64_t)v[0];
        return PyBool_FromLong(
            __atomic_compare_exchange_n(word, &prev, (uint64_t)v[1], 0, ORDER, ORDER));
    }
    Py_UNREACHABLE();
}

/* Converts the operands; must run before the buffer is looked at, because __index__ may run
 * arbitrary code (even close the View). An offset too large for Py_ssize_t is out of range:
 * ValueError like any other, not OverflowError. */
static int
parse_operands(op_t op, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t nbefore, Py_ssize_t *off,
               int64_t *v)
{
    Py_ssize_t want = 1 + OPS[op].nvalues;

    if (nargs != want) {
        /* nbefore: arguments the caller consumed already (the buffer), counted in the message. */
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", OPS[op].name,
                     nbefore + want, nbefore + nargs);
        return -1;
    }
    *off = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (*off == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "offset %R out of range", args[0]);
        }
        return -1;
    }
    for (Py_ssize_t i = 0; i < OPS[op].nvalues; i++) {
        long long x = PyLong_AsLongLong(args[1 + i]);
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        v[i] = (int64_t)x;
    }
    return 0;
}

/* Returns the word at off in view, or NULL with ValueError set. */
static uint64_t *
word_at(const Py_buffer *view, Py_ssize_t off)
{
    char *p;

    if (off % WORD != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not a multiple of %d", off, WORD);
        return NULL;
    }
    if (off < 0 || off > view->len - WORD) {
        PyErr_Format(PyExc_ValueError, "offset %zd out of range for a buffer of %zd bytes", off,
                     view->len);
        return NULL;
    }
    p = (char *)view->buf + off;
    if ((uintptr_t)p % WORD != 0) {
        PyErr_SetString(PyExc_ValueError, "buffer is not 8-byte aligned in memory");
        return NULL;
    }
    return (uint64_t *)p;
}

/* Module functions: fn(buf, off, *values). */
static PyObject *
call_function(op_t op, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    int64_t v[MAX_VALUES];
    Py_buffer view;
    uint64_t *word;
    PyObject *result = NULL;

    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (0 given)", OPS[op].name,
                     2 + OPS[op].nvalues);
        return NULL;
    }
    if (parse_operands(op, args + 1, nargs - 1, 1, &off, v) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    word = word_at(&view, off);
    if (word != NULL) {
        result = apply(op, word, v);
    }
    PyBuffer_Release(&view);
    return result;
}

#define FUNCTION(op, fname)                                                       \
    static PyObject *fname(PyObject *Py_UNUSED(module), PyObject *const *args,   \
                           Py_ssize_t nargs)                                      \
    {                                                                             \
        return call_function(op, args, nargs);                                    \
    }

FUNCTION(OP_LOAD, fn_load)
FUNCTION(OP_STORE, fn_store)
FUNCTION(OP_EXCHANGE, fn_exchange)
FUNCTION(OP_FETCH_ADD, fn_fetch_add)
FUNCTION(OP_FETCH_MAX, fn_fetch_max)
FUNCTION(OP_CAS, fn_compare_exchange)

/* ---- View ------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    Py_buffer view; /* valid only while is_open */
    int is_open;
} ViewObject;

static void
view_release(ViewObject *self)
{
    if (self->is_open) {
        self->is_open = 0;
        PyBuffer_Release(&self->view);
    }
}

static PyObject *
View_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *obj;
    ViewObject *self;

    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "View() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:View", &obj)) {
        return NULL;
    }
    self = (ViewObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->is_open = 1;
    /* The exporter cannot move its memory while exported, so checking the base once is enough. */
    if ((uintptr_t)self->view.buf % WORD != 0) {
        PyErr_SetString(PyExc_ValueError, "buffer is not 8-byte aligned in memory");
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
View_traverse(ViewObject *self, visitproc visit, void *arg)
{
    if (self->is_open) {
        Py_VISIT(self->view.obj);
    }
    return 0;
}

static int
View_clear(ViewObject *self)
{
    view_release(self);
    return 0;
}

static void
View_dealloc(ViewObject *self)
{
    PyObject_GC_UnTrack(self);
    view_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
call_method(ViewObject *self, op_t op, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    int64_t v[MAX_VALUES];
    uint64_t *word;

    if (parse_operands(op, args, nargs, 0, &off, v) < 0) {
        return NULL;
    }
    if (!self->is_open) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed View");
        return NULL;
    }
    word = word_at(&self->view, off);
    if (word == NULL) {
        return NULL;
    }
    return apply(op, word, v);
}

#define METHOD(op, mname)                                                                    \
    static PyObject *mname(ViewObject *self, PyObject *const *args, Py_ssize_t nargs)      \
    {                                                                                        \
        return call_method(self, op, args, nargs);                                           \
    }

METHOD(OP_LOAD, View_load)
METHOD(OP_STORE, View_store)
METHOD(OP_EXCHANGE, View_exchange)
METHOD(OP_FETCH_ADD, View_fetch_add)
METHOD(OP_FETCH_MAX, View_fetch_max)
METHOD(OP_CAS, View_compare_exchange)

/* ---- compound operations: one call for a whole paired update (the hot path) ------------------
 *
 * add_many(ops, src=-1, peaks=(), /): ops is a tuple (off0, delta0, off1, delta1, ...) of at most
 *   MAX_PAIRS pairs; each fetch_add runs in order (each sequentially consistent, exactly as the same
 *   calls one by one would). If src >= 0, the result is the value the src-th pair left in its word
 *   (old + delta), and every offset in peaks gets fetch_max(result); otherwise the result is 0.
 * store_many(ops, /): ops is a tuple (off0, value0, off1, value1, ...) of at most MAX_PAIRS pairs;
 *   each store runs in order (each sequentially consistent: a word stored last is seen by another
 *   process only after all the others, which is how a record is published before its tag).
 * bounded_add(seq, off, limit, ops, peaks, /): +1 on the word at off unless it is >= limit, by
 *   compare-exchange so it never overshoots; the cell's seq word is incremented before the first
 *   change and after the last (a paired operation, see proxy.shm); then the adds of ops, then
 *   fetch_max(new value) on each offset in peaks. Returns the new value, or None when refused (seq
 *   untouched if refused at once, else incremented twice: the bracket is closed).
 * Every offset is checked (range, alignment) before anything changes: an invalid one raises with
 * the buffer untouched. */

#define MAX_PAIRS 16

static int
parse_offsets(ViewObject *self, PyObject *tuple, Py_ssize_t stride, uint64_t **words, int64_t *deltas,
              Py_ssize_t *count)
{
    Py_ssize_t n;

    if (!PyTuple_Check(tuple)) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of ints");
        return -1;
    }
    n = PyTuple_GET_SIZE(tuple);
    if (n % stride != 0 || n / stride > MAX_PAIRS) {
        PyErr_Format(PyExc_ValueError, "expected at most %d %s", MAX_PAIRS,
                     stride == 2 ? "(offset, delta) pairs" : "offsets");
        return -1;
    }
    *count = n / stride;
    for (Py_ssize_t i = 0; i < *count; i++) {
        Py_ssize_t off = PyNumber_AsSsize_t(PyTuple_GET_ITEM(tuple, i * stride), PyExc_ValueError);
        if (off == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (stride == 2) {
            long long d = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, i * stride + 1));
            if (d == -1 && PyErr_Occurred()) {
                return -1;
            }
            deltas[i] = (int64_t)d;
        }
        if (!self->is_open) {
            PyErr_SetString(PyExc_ValueError, "operation on a closed View");
            return -1;
        }
        words[i] = word_at(&self->view, off);
        if (words[i] == NULL) {
            return -1;
        }
    }
    return 0;
}

static void
raise_peaks(uint64_t **peaks, Py_ssize_t npeaks, int64_t value)
{
    for (Py_ssize_t i = 0; i < npeaks; i++) {
        uint64_t prev = __atomic_load_n(peaks[i], ORDER);
        while ((int64_t)prev < value &&
               !__atomic_compare_exchange_n(peaks[i], &prev, (uint64_t)value, 1, ORDER, ORDER)) {
        }
    }
}

static PyObject *
View_add_many(ViewObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t *words[MAX_PAIRS], *peaks[MAX_PAIRS];
    int64_t deltas[MAX_PAIRS], result = 0;
    Py_ssize_t n, npeaks = 0, src = -1;

    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "add_many() takes 1 to 3 arguments");
        return NULL;
    }
    if (nargs >= 2) {
        src = PyNumber_AsSsize_t(args[1], PyExc_ValueError);
        if (src == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (parse_offsets(self, args[0], 2, words, deltas, &n) < 0 ||
        (nargs == 3 && parse_offsets(self, args[2], 1, peaks, NULL, &npeaks) < 0)) {
        return NULL;
    }
    if (src >= n) {
        PyErr_SetString(PyExc_ValueError, "src out of range");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t prev = __atomic_fetch_add(words[i], (uint64_t)deltas[i], ORDER);
        if (i == src) {
            result = (int64_t)(prev + (uint64_t)deltas[i]);
        }
    }
    if (src >= 0) {
        raise_peaks(peaks, npeaks, result);
    }
    return PyLong_FromLongLong(result);
}

static PyObject *
View_store_many(ViewObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t *words[MAX_PAIRS];
    int64_t values[MAX_PAIRS];
    Py_ssize_t n;

    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "store_many() takes exactly 1 argument");
        return NULL;
    }
    if (parse_offsets(self, args[0], 2, words, values, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        __atomic_store_n(words[i], (uint64_t)values[i], ORDER);
    }
    Py_RETURN_NONE;
}

static PyObject *
View_bounded_add(ViewObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t *words[MAX_PAIRS], *peaks[MAX_PAIRS], *seq, *target;
    int64_t deltas[MAX_PAIRS];
    Py_ssize_t n, npeaks, seq_off, off;
    long long limit;
    uint64_t cur;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "bounded_add() takes exactly 5 arguments");
        return NULL;
    }
    seq_off = PyNumber_AsSsize_t(args[0], PyExc_ValueError);
    if (seq_off == -1 && PyErr_Occurred()) {
        return NULL;
    }
    off = PyNumber_AsSsize_t(args[1], PyExc_ValueError);
    if (off == -1 && PyErr_Occurred()) {
        return NULL;
    }
    limit = PyLong_AsLongLong(args[2]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (parse_offsets(self, args[3], 2, words, deltas, &n) < 0 ||
        parse_offsets(self, args[4], 1, peaks, NULL, &npeaks) < 0) {
        return NULL;
    }
    if (!self->is_open) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed View");
        return NULL;
    }
    seq = word_at(&self->view, seq_off);
    target = seq == NULL ? NULL : word_at(&self->view, off);
    if (target == NULL) {
        return NULL;
    }
    cur = __atomic_load_n(target, ORDER);
    if ((int64_t)cur >= limit) { /* refused without touching seq: the common case of a full server */
        Py_RETURN_NONE;
    }
    __atomic_fetch_add(seq, 1, ORDER);
    while (!__atomic_compare_exchange_n(target, &cur, cur + 1, 0, ORDER, ORDER)) {
        if ((int64_t)cur >= limit) { /* the CAS refreshed cur */
            __atomic_fetch_add(seq, 1, ORDER);
            Py_RETURN_NONE;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        __atomic_fetch_add(words[i], (uint64_t)deltas[i], ORDER);
    }
    __atomic_fetch_add(seq, 1, ORDER);
    raise_peaks(peaks, npeaks, (int64_t)(cur + 1));
    return PyLong_FromLongLong((int64_t)(cur + 1));
}

static PyObject *
View_close(ViewObject *self, PyObject *Py_UNUSED(ignored))
{
    view_release(self);
    Py_RETURN_NONE;
}

static PyObject *
View_enter(ViewObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *
View_exit(ViewObject *self, PyObject *Py_UNUSED(args))
{
    view_release(self);
    Py_RETURN_NONE;
}

static PyObject *
View_get_closed(ViewObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(!self->is_open);
}

static PyObject *
View_get_nbytes(ViewObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->is_open ? self->view.len : 0);
}

static PyObject *
View_repr(ViewObject *self)
{
    if (!self->is_open) {
        return PyUnicode_FromString("<proxy._atomic.View closed>");
    }
    return PyUnicode_FromFormat("<proxy._atomic.View nbytes=%zd>", self->view.len);
}

#define DOC_OFF "off: byte offset of the word, a multiple of 8 within the buffer."

static PyMethodDef View_methods[] = {
    {"load", (PyCFunction)(void (*)(void))View_load, METH_FASTCALL,
     PyDoc_STR("load($self, off, /)\n--\n\nReturn the word at off. " DOC_OFF)},
    {"store", (PyCFunction)(void (*)(void))View_store, METH_FASTCALL,
     PyDoc_STR("store($self, off, value, /)\n--\n\nSet the word at off to value.")},
    {"exchange", (PyCFunction)(void (*)(void))View_exchange, METH_FASTCALL,
     PyDoc_STR("exchange($self, off, value, /)\n--\n\nSet the word to value; return the old value.")},
    {"fetch_add", (PyCFunction)(void (*)(void))View_fetch_add, METH_FASTCALL,
     PyDoc_STR("fetch_add($self, off, delta, /)\n--\n\n"
               "Add delta to the word (wrapping); return the old value.")},
    {"fetch_max", (PyCFunction)(void (*)(void))View_fetch_max, METH_FASTCALL,
     PyDoc_STR("fetch_max($self, off, value, /)\n--\n\n"
               "Set the word to max(word, value); return the old value.")},
    {"compare_exchange", (PyCFunction)(void (*)(void))View_compare_exchange, METH_FASTCALL,
     PyDoc_STR("compare_exchange($self, off, expected, desired, /)\n--\n\n"
               "If the word equals expected, set it to desired and return True; else False.")},
    {"add_many", (PyCFunction)(void (*)(void))View_add_many, METH_FASTCALL,
     PyDoc_STR("add_many($self, ops, src=-1, peaks=(), /)\n--\n\n"
               "fetch_add each (off, delta) pair of ops in order; see the module source.")},
    {"store_many", (PyCFunction)(void (*)(void))View_store_many, METH_FASTCALL,
     PyDoc_STR("store_many($self, ops, /)\n--\n\n"
               "store each (off, value) pair of ops in order; see the module source.")},
    {"bounded_add", (PyCFunction)(void (*)(void))View_bounded_add, METH_FASTCALL,
     PyDoc_STR("bounded_add($self, seq, off, limit, ops, peaks, /)\n--\n\n"
               "+1 at off below limit, bracketed by seq, then ops and peaks; None if refused.")},
    {"close", (PyCFunction)View_close, METH_NOARGS,
     PyDoc_STR("close($self, /)\n--\n\nRelease the buffer (idempotent).")},
    {"__enter__", (PyCFunction)View_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)View_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef View_getset[] = {
    {"closed", (getter)View_get_closed, NULL, PyDoc_STR("True once close() was called."), NULL},
    {"nbytes", (getter)View_get_nbytes, NULL, PyDoc_STR("Length of the buffer (0 once closed)."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._atomic.View",
    .tp_basicsize = sizeof(ViewObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("View(buf, /)\n--\n\n"
                        "Hold buf's writable buffer until close(); methods take only the offset."),
    .tp_new = View_new,
    .tp_dealloc = (destructor)View_dealloc,
    .tp_traverse = (traverseproc)View_traverse,
    .tp_clear = (inquiry)View_clear,
    .tp_repr = (reprfunc)View_repr,
    .tp_methods = View_methods,
    .tp_getset = View_getset,
};

/* ---- module ---------------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"load", (PyCFunction)(void (*)(void))fn_load, METH_FASTCALL,
     PyDoc_STR("load($module, buf, off, /)\n--\n\nReturn the word at off. " DOC_OFF)},
    {"store", (PyCFunction)(void (*)(void))fn_store, METH_FASTCALL,
     PyDoc_STR("store($module, buf, off, value, /)\n--\n\nSet the word at off to value.")},
    {"exchange", (PyCFunction)(void (*)(void))fn_exchange, METH_FASTCALL,
     PyDoc_STR("exchange($module, buf, off, value, /)\n--\n\n"
               "Set the word to value; return the old value.")},
    {"fetch_add", (PyCFunction)(void (*)(void))fn_fetch_add, METH_FASTCALL,
     PyDoc_STR("fetch_add($module, buf, off, delta, /)\n--\n\n"
               "Add delta to the word (wrapping); return the old value.")},
    {"fetch_max", (PyCFunction)(void (*)(void))fn_fetch_max, METH_FASTCALL,
     PyDoc_STR("fetch_max($module, buf, off, value, /)\n--\n\n"
               "Set the word to max(word, value); return the old value.")},
    {"compare_exchange", (PyCFunction)(void (*)(void))fn_compare_exchange, METH_FASTCALL,
     PyDoc_STR("compare_exchange($module, buf, off, expected, desired, /)\n--\n\n"
               "If the word equals expected, set it to desired and return True; else False.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef atomic_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxy._atomic",
    .m_doc = PyDoc_STR("Sequentially consistent 64-bit atomics on a word of a writable buffer."),
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__atomic(void)
{
    PyObject *m;

    if (PyType_Ready(&ViewType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&atomic_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "View", (PyObject *)&ViewType) < 0 ||
        PyModule_AddIntConstant(m, "WORD_SIZE", WORD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
