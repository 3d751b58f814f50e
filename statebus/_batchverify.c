/* Ed25519 verification of many signatures with the GIL released once.
 *
 * Called through ctypes, libsodium releases the GIL around each signature, and
 * the thread that verifies must win it back from the busy event loop after
 * every one (about 60 us of work, then as long again waiting). This loop
 * checks a whole chunk of a peer's entries in one call instead. It calls the
 * crypto_sign_verify_detached of the libsodium that PyNaCl loaded (its address
 * comes from ctypes, see _sodium.py), so the cryptography is libsodium's own.
 *
 * verify_batch(address, packed, count) -> bytes, one 0/1 verdict per entry.
 * packed holds count records: a 64-byte signature, a 32-byte public key, a
 * 4-byte big-endian message length, then the message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef int (*verify_fn)(const unsigned char *signature, const unsigned char *message,
                         unsigned long long length, const unsigned char *public_key);

#define HEADER 100 /* signature, public key, length */

static PyObject *verify_batch(PyObject *self, PyObject *args) {
    unsigned long long address;
    Py_buffer packed;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "Ky*n", &address, &packed, &count)) {
        return NULL;
    }
    if (address == 0 || count < 0) {
        PyBuffer_Release(&packed);
        PyErr_SetString(PyExc_ValueError, "no verify function, or a negative count");
        return NULL;
    }
    PyObject *verdicts = PyBytes_FromStringAndSize(NULL, count);
    if (verdicts == NULL) {
        PyBuffer_Release(&packed);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(verdicts);
    const unsigned char *at = (const unsigned char *)packed.buf;
    const unsigned char *end = at + packed.len;
    verify_fn verify = (verify_fn)(uintptr_t)address;
    int whole = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        if (end - at < HEADER) {
            whole = 0;
            break;
        }
        uint32_t length = ((uint32_t)at[96] << 24) | ((uint32_t)at[97] << 16) |
                          ((uint32_t)at[98] << 8) | (uint32_t)at[99];
        if ((size_t)(end - at - HEADER) < length) {
            whole = 0;
            break;
        }
        out[i] = verify(at, at + HEADER, length, at + 64) == 0;
        at += HEADER + (size_t)length;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&packed);
    if (!whole || at != end) {
        Py_DECREF(verdicts);
        PyErr_SetString(PyExc_ValueError, "the packed entries do not match their count");
        return NULL;
    }
    return verdicts;
}

static PyMethodDef methods[] = {
    {"verify_batch", verify_batch, METH_VARARGS,
     "verify_batch(address, packed, count) -> bytes of 0/1 verdicts, the GIL released"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_batchverify", NULL, -1, methods};

PyMODINIT_FUNC PyInit__batchverify(void) { return PyModule_Create(&module); }
