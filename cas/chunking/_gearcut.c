/* FastCDC 2020's cut point in C: the byte loop of cas/chunking/fastcdc.py's algorithm.
 *
 * Optional: cas/chunking/fastcdc.py uses it when it was built (pip builds it when a
 * C compiler is there) and its numpy scan otherwise; tests/cas/test_fastcdc.py
 * holds both to the same reference boundaries. The loop runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The length of the chunk at the start of data[0..n): scan from min_size (rounded
 * down to even, as the reference implementations do), cut before the byte where
 * the rolling gear hash has no bit of the mask set: the small mask (rarer cuts)
 * until the average size, the large one after it, at most max_size bytes. */
static Py_ssize_t cut_point(const unsigned char *data, Py_ssize_t n, Py_ssize_t min_size, Py_ssize_t avg_size,
                            Py_ssize_t max_size, uint64_t mask_small, uint64_t mask_large, const uint64_t *gear) {
    if (n <= min_size)
        return n;
    Py_ssize_t remaining = n, center = avg_size;
    if (remaining > max_size)
        remaining = max_size;
    else if (remaining < center)
        center = remaining;
    Py_ssize_t i = min_size & ~(Py_ssize_t)1;
    Py_ssize_t normal_at = center & ~(Py_ssize_t)1, end = remaining & ~(Py_ssize_t)1;
    uint64_t hash = 0;
    for (; i < normal_at; i++) {
        hash = (hash << 1) + gear[data[i]];
        if (!(hash & mask_small))
            return i;
    }
    for (; i < end; i++) {
        hash = (hash << 1) + gear[data[i]];
        if (!(hash & mask_large))
            return i;
    }
    return remaining;
}

static PyObject *cut(PyObject *self, PyObject *args) {
    Py_buffer data, gear_table;
    Py_ssize_t offset, available, min_size, avg_size, max_size;
    unsigned long long mask_small, mask_large;
    if (!PyArg_ParseTuple(args, "y*nnnnnKKy*", &data, &offset, &available, &min_size, &avg_size, &max_size,
                          &mask_small, &mask_large, &gear_table))
        return NULL;
    PyObject *result = NULL;
    uint64_t gear[256];
    if (gear_table.len != (Py_ssize_t)sizeof(gear)) {
        PyErr_SetString(PyExc_ValueError, "the gear table must be 256 native 64-bit values");
    } else if (offset < 0 || available < 0 || offset > data.len || available > data.len - offset) {
        PyErr_SetString(PyExc_ValueError, "offset and available lie outside the data");
    } else {
        memcpy(gear, gear_table.buf, sizeof(gear));
        const unsigned char *start = (const unsigned char *)data.buf + offset;
        Py_ssize_t length;
        Py_BEGIN_ALLOW_THREADS
        length = cut_point(start, available, min_size, avg_size, max_size, mask_small, mask_large, gear);
        Py_END_ALLOW_THREADS
        result = PyLong_FromSsize_t(length);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&gear_table);
    return result;
}

static PyMethodDef methods[] = {
    {"cut", cut, METH_VARARGS,
     "cut(data, offset, available, min_size, avg_size, max_size, mask_small, mask_large, gear) -> chunk length"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gearcut", "FastCDC 2020 cut points in C.", -1, methods};

PyMODINIT_FUNC PyInit__gearcut(void) { return PyModule_Create(&module); }
