/* The C twin of scope_otel.redact's batch check: which finished SDK spans of a
 * batch hold something the redaction rules have not seen before.
 *
 *   needs_look(spans, plain_keys, clean) -> list of spans
 *
 * A span needs a look (scope_otel.redact.scrub_span) when it is not laid out
 * as the SDK's Span (no _attributes._dict dict, _events._dq, _status), when it
 * has events or a status description, when an attribute key is not in
 * plain_keys (a set of names known not to be secret), or when a value is a
 * tuple or list, or a str of 5 characters or more not in clean (a dict of
 * texts known to hold no secret).  Numbers and short strings never need one.
 * The same decision as redact.scrub_spans' pure-Python sets, without a Python
 * call per span.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *s_attributes, *s_dict, *s_events, *s_dq, *s_status, *s_description;

/* obj.<name> as a new reference; NULL without an error set when missing. */
static PyObject *
field(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

/* 1: needs a look, 0: clean, -1: error */
static int
span_needs_look(PyObject *span, PyObject *plain, PyObject *clean)
{
    PyObject *o = field(span, s_attributes);
    if (o == NULL)
        return 1;
    PyObject *attrs = field(o, s_dict);
    Py_DECREF(o);
    if (attrs == NULL)
        return 1;
    int result = 0;
    if (!PyDict_Check(attrs)) {
        result = 1;
        goto done;
    }
    o = field(span, s_events);
    if (o == NULL) {
        result = 1;
        goto done;
    }
    PyObject *dq = field(o, s_dq);
    Py_DECREF(o);
    if (dq == NULL) {
        result = 1;
        goto done;
    }
    Py_ssize_t n_events = PyObject_Length(dq);
    Py_DECREF(dq);
    if (n_events != 0) { /* events, or not a sized container (-1) */
        PyErr_Clear();
        result = 1;
        goto done;
    }
    o = field(span, s_status);
    if (o == NULL) {
        result = 1;
        goto done;
    }
    PyObject *desc = field(o, s_description);
    Py_DECREF(o);
    if (desc == NULL) {
        result = 1;
        goto done;
    }
    int has_desc = desc != Py_None && PyObject_IsTrue(desc);
    Py_DECREF(desc);
    if (has_desc) {
        PyErr_Clear();
        result = 1;
        goto done;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        int known = PySet_Contains(plain, key);
        if (known < 0) {
            result = -1;
            goto done;
        }
        if (!known) {
            result = 1;
            goto done;
        }
        if (PyUnicode_CheckExact(value)) {
            if (PyUnicode_GET_LENGTH(value) < 5)
                continue;
            int seen = PyDict_Contains(clean, value);
            if (seen < 0) {
                result = -1;
                goto done;
            }
            if (!seen) {
                result = 1;
                goto done;
            }
        } else if (PyTuple_Check(value) || PyList_Check(value) || PyUnicode_Check(value)) {
            result = 1;
            goto done;
        }
    }
done:
    Py_DECREF(attrs);
    return result;
}

static PyObject *
needs_look(PyObject *self, PyObject *args)
{
    PyObject *spans, *plain, *clean;
    if (!PyArg_ParseTuple(args, "O!O!O!:needs_look", &PyList_Type, &spans, &PySet_Type, &plain,
                          &PyDict_Type, &clean))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(spans);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *span = PyList_GET_ITEM(spans, i);
        int look = span_needs_look(span, plain, clean);
        if (look < 0 || (look && PyList_Append(out, span) < 0)) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"needs_look", needs_look, METH_VARARGS,
     "needs_look(spans, plain_keys, clean) -> the spans redaction must look at (see the module source)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_redactc", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__redactc(void)
{
#define INTERN(var, text)                                   \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return NULL;
    INTERN(s_attributes, "_attributes");
    INTERN(s_dict, "_dict");
    INTERN(s_events, "_events");
    INTERN(s_dq, "_dq");
    INTERN(s_status, "_status");
    INTERN(s_description, "_description");
    return PyModule_Create(&module);
}
