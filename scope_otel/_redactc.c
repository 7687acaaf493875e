/* The C twin of scope_otel.redact's batch check, for the attribute dicts:
 * which finished SDK spans of a batch hold a key or a text the redaction
 * rules have not seen before.
 *
 *   needs_look(spans, dicts, plain_keys, clean) -> list of spans
 *
 * dicts[i] is spans[i]._attributes._dict, gathered by the caller in Python
 * (scope_otel.redact._c_batch_check), where the interpreter's specialised
 * attribute loads read a span's fields for a fraction of what
 * PyObject_GetAttr costs from C.  spans[i] needs a look when dicts[i] is not
 * a dict, when a key is not in plain_keys (a set of names known not to be
 * secret), or when a value is a tuple or list, or a str of 5 characters or
 * more not in clean (a dict of texts known to hold no secret).  Numbers and
 * short strings never need one.  The same decision as
 * redact._py_needs_look's pure-Python sets, without a Python call per span.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Exact str objects already found in plain_keys or clean during one call:
 * attribute names are the same objects span after span (literals), and so
 * are many values (a method, a route, an address), so a pointer compare
 * replaces most hash lookups.  Only exact str is remembered: looking one up
 * runs no Python code, so nothing can change the sets or free the objects
 * (the dicts hold them) while the call runs. */
#define SEEN_MAX 32
typedef struct {
    PyObject *item[SEEN_MAX];
    int n;
} seen_t;

/* 1: a member (looked up in container when not seen), 0: not, -1: error */
static inline int
member(seen_t *seen, PyObject *obj, PyObject *container, int is_set)
{
    for (int i = 0; i < seen->n; i++)
        if (seen->item[i] == obj)
            return 1;
    int found = is_set ? PySet_Contains(container, obj) : PyDict_Contains(container, obj);
    if (found > 0 && seen->n < SEEN_MAX && PyUnicode_CheckExact(obj))
        seen->item[seen->n++] = obj;
    return found;
}

/* 1: needs a look, 0: clean, -1: error */
static int
dict_needs_look(PyObject *attrs, PyObject *plain, PyObject *clean, seen_t *keys, seen_t *texts)
{
    if (!PyDict_Check(attrs))
        return 1;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        int known = member(keys, key, plain, 1);
        if (known <= 0)
            return known < 0 ? -1 : 1;
        if (!PyUnicode_CheckExact(key)) /* its __hash__/__eq__ may have run Python code */
            keys->n = texts->n = 0;
        if (PyUnicode_CheckExact(value)) {
            if (PyUnicode_GET_LENGTH(value) < 5)
                continue;
            int seen = member(texts, value, clean, 0);
            if (seen <= 0)
                return seen < 0 ? -1 : 1;
        } else if (PyTuple_Check(value) || PyList_Check(value) || PyUnicode_Check(value)) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
needs_look(PyObject *self, PyObject *args)
{
    PyObject *spans, *dicts, *plain, *clean;
    if (!PyArg_ParseTuple(args, "O!O!O!O!:needs_look", &PyList_Type, &spans, &PyList_Type, &dicts,
                          &PySet_Type, &plain, &PyDict_Type, &clean))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(spans);
    if (PyList_GET_SIZE(dicts) != n) {
        PyErr_SetString(PyExc_ValueError, "needs_look: one attribute dict per span");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    seen_t keys = {.n = 0}, texts = {.n = 0};
    for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(dicts) && i < PyList_GET_SIZE(spans); i++) {
        PyObject *attrs = PyList_GET_ITEM(dicts, i);
        Py_INCREF(attrs); /* a key's __eq__ could change the lists */
        int look = dict_needs_look(attrs, plain, clean, &keys, &texts);
        Py_DECREF(attrs);
        if (look < 0 || (look && PyList_Append(out, PyList_GET_ITEM(spans, i)) < 0)) {
            Py_DECREF(out);
            return NULL;
        }
        if (look) { /* a key's __eq__ or __hash__ may have run Python code */
            keys.n = 0;
            texts.n = 0;
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"needs_look", needs_look, METH_VARARGS,
     "needs_look(spans, dicts, plain_keys, clean) -> the spans redaction must look at (see the module source)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_redactc", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__redactc(void)
{
    return PyModule_Create(&module);
}
