/*
 * proxy._peek: what a parked connection's socket holds, without consuming anything.
 *
 * peek(fd, /) -> int: a non-blocking recv(MSG_PEEK) of one byte on descriptor fd:
 *   0  nothing to read (EAGAIN, EWOULDBLOCK or EINTR): the connection is fit for a request;
 *   1  end of file: the peer closed it;
 *   2  bytes are waiting that nobody asked for (out of sync: never reuse);
 *   3  any other error (reset, not a socket, a closed descriptor).
 * The GIL is held: the call never blocks. proxy.pidfd names the codes (Peek) and keeps a ctypes
 * version of the same call for a build without this extension.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

static PyObject *
peek(PyObject *Py_UNUSED(module), PyObject *arg)
{
    char byte;
    ssize_t n;
    int fd = PyObject_AsFileDescriptor(arg);

    if (fd < 0) {
        return NULL;
    }
    n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
        return PyLong_FromLong(2);
    }
    if (n == 0) {
        return PyLong_FromLong(1);
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return PyLong_FromLong(0);
    }
    return PyLong_FromLong(3);
}

static PyMethodDef methods[] = {
    {"peek", peek, METH_O,
     PyDoc_STR("peek(fd, /)\n--\n\n"
               "0: nothing to read, 1: end of file, 2: unread bytes, 3: error (MSG_PEEK).")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "proxy._peek", "Peek at a socket without consuming anything.", -1, methods,
};

PyMODINIT_FUNC
PyInit__peek(void)
{
    return PyModule_Create(&module);
}
