/* The one reader of the OpenTelemetry SDK's private fields for scope-otel's C encoders.
 *
 * The OTLP encoder (export/_otlpenc.c) and the ClickHouse Native encoder
 * (store/_native/encode.c) read spans, events, links, statuses, attribute
 * maps and trace states through the functions here, never by name
 * themselves: the SDK classes and their field names are written once, so an
 * SDK rename is one edit here.
 *
 * The SDK's public properties are Python functions that return exactly these
 * fields; reading the fields directly saves several Python calls a span.  It
 * is done only for objects whose type is exactly the SDK class (ReadableSpan,
 * SpanContext, Event, Link, Status, BoundedAttributes, BoundedList,
 * TraceState); anything else (subclasses, look-alikes) is read through the
 * public properties, so a renamed field still encodes correctly, only slower,
 * until this file follows.
 *
 * sdk_fields_init() (from the module's init function) interns the names; the
 * SDK classes are imported on first use (sdk_types_ready()), so a process that
 * never encodes a span (the store writer merging blocks) never imports the SDK.
 */
#ifndef SCOPE_OTEL_SDK_FIELDS_H
#define SCOPE_OTEL_SDK_FIELDS_H

#include <Python.h>

/* ---- the SDK classes -------------------------------------------------------------- */

enum {
    SDK_T_SPAN, SDK_T_CONTEXT, SDK_T_EVENT, SDK_T_LINK, SDK_T_STATUS, SDK_T_ATTRIBUTES, SDK_T_LIST,
    SDK_T_TRACE_STATE, SDK_N_TYPES
};

static PyTypeObject *sdk_type[SDK_N_TYPES];

/* 0 once the SDK classes are loaded, -1 with an exception set otherwise. */
static int
sdk_types_ready(void)
{
    static const char *const where[SDK_N_TYPES][2] = {
        {"opentelemetry.sdk.trace", "ReadableSpan"},    {"opentelemetry.trace.span", "SpanContext"},
        {"opentelemetry.sdk.trace", "Event"},           {"opentelemetry.trace", "Link"},
        {"opentelemetry.trace.status", "Status"},       {"opentelemetry.attributes", "BoundedAttributes"},
        {"opentelemetry.sdk.util", "BoundedList"},      {"opentelemetry.trace.span", "TraceState"},
    };
    if (sdk_type[SDK_N_TYPES - 1] != NULL)
        return 0;
    for (int i = 0; i < SDK_N_TYPES; i++) {
        if (sdk_type[i] != NULL)
            continue;
        PyObject *mod = PyImport_ImportModule(where[i][0]);
        if (mod == NULL)
            return -1;
        PyObject *cls = PyObject_GetAttrString(mod, where[i][1]);
        Py_DECREF(mod);
        if (cls == NULL)
            return -1;
        if (!PyType_Check(cls)) {
            Py_DECREF(cls);
            PyErr_Format(PyExc_TypeError, "scope-otel: %s.%s is not a class", where[i][0], where[i][1]);
            return -1;
        }
        sdk_type[i] = (PyTypeObject *)cls; /* kept for the life of the process */
    }
    return 0;
}

#define SDK_IS(o, t) (Py_TYPE(o) == sdk_type[t])

/* ---- field names ------------------------------------------------------------------ */

enum {
    /* ReadableSpan, in the order of SdkSpan below */
    SDK_CONTEXT, SDK_PARENT, SDK_NAME, SDK_KIND, SDK_START_TIME, SDK_END_TIME, SDK_ATTRIBUTES,
    SDK_EVENTS, SDK_LINKS, SDK_STATUS, SDK_RESOURCE, SDK_SCOPE,
    /* Event (also _name, _attributes); Link (_context, _attributes) */
    SDK_TIMESTAMP,
    /* Status */
    SDK_STATUS_CODE, SDK_DESCRIPTION,
    /* BoundedAttributes and TraceState: their dict; BoundedList: its deque */
    SDK_DICT, SDK_DQ,
    SDK_N_FIELDS
};

static PyObject *sdk_field[SDK_N_FIELDS];  /* the private names */
static PyObject *sdk_public[SDK_N_FIELDS]; /* the public properties returning them (NULL: none) */

static int
sdk_fields_init(void)
{
    static const char *const names[SDK_N_FIELDS][2] = {
        {"_context", "context"}, {"_parent", "parent"}, {"_name", "name"}, {"_kind", "kind"},
        {"_start_time", "start_time"}, {"_end_time", "end_time"}, {"_attributes", "attributes"},
        {"_events", "events"}, {"_links", "links"}, {"_status", "status"}, {"_resource", "resource"},
        {"_instrumentation_scope", "instrumentation_scope"},
        {"_timestamp", "timestamp"},
        {"_status_code", "status_code"}, {"_description", "description"},
        {"_dict", NULL}, {"_dq", NULL},
    };
    for (int i = 0; i < SDK_N_FIELDS; i++) {
        if (sdk_field[i] == NULL && (sdk_field[i] = PyUnicode_InternFromString(names[i][0])) == NULL)
            return -1;
        if (names[i][1] != NULL && sdk_public[i] == NULL &&
            (sdk_public[i] = PyUnicode_InternFromString(names[i][1])) == NULL)
            return -1;
    }
    return 0;
}

/* ---- readers (all return new references, or NULL with an exception set) ---------- */

/* An instance attribute of an SDK object.  A plain getattr: the SDK's objects
 * keep their attributes in the interpreter's inline values, which getattr
 * reads in place, while asking for their __dict__ (PyObject_GenericGetDict)
 * would build one for every object, and make every later read slower. */
static inline PyObject *
sdk_iattr(PyObject *o, PyObject *name)
{
    return PyObject_GetAttr(o, name);
}

/* o.<field>: the private field when o is exactly SDK class ``t``, the public property otherwise. */
static inline PyObject *
sdk_get(PyObject *o, int t, int field)
{
    return SDK_IS(o, t) ? sdk_iattr(o, sdk_field[field]) : PyObject_GetAttr(o, sdk_public[field]);
}

/* The plain dict behind an attribute map: the map itself when it is a dict, a
 * BoundedAttributes' (or TraceState's) ``_dict``; NULL without an exception
 * when there is none to read (use the Mapping protocol then). */
static PyObject *
sdk_plain_dict(PyObject *map)
{
    if (PyDict_CheckExact(map))
        return Py_NewRef(map);
    if (!SDK_IS(map, SDK_T_ATTRIBUTES) && !SDK_IS(map, SDK_T_TRACE_STATE))
        return NULL;
    PyObject *d = sdk_iattr(map, sdk_field[SDK_DICT]);
    if (d == NULL)
        PyErr_Clear();
    else if (!PyDict_CheckExact(d))
        Py_CLEAR(d);
    return d;
}

/* What to iterate for a span's events or links: a BoundedList's deque (without
 * the lock and copy of its __iter__), anything else itself. */
static PyObject *
sdk_items(PyObject *seq)
{
    return SDK_IS(seq, SDK_T_LIST) ? sdk_iattr(seq, sdk_field[SDK_DQ]) : Py_NewRef(seq);
}

/* ``n`` fields of an SDK object of class ``t`` (see sdk_get), into out[0..n-1];
 * on failure none is kept. */
static int
sdk_read(PyObject *o, int t, int n, const int *fields, PyObject **out)
{
    for (int i = 0; i < n; i++)
        if ((out[i] = sdk_get(o, t, fields[i])) == NULL) {
            while (i-- > 0)
                Py_CLEAR(out[i]);
            return -1;
        }
    return 0;
}

/* What sdk_read reads of an event, a link and a status (out[] in this order). */
enum { SDK_EV_TIMESTAMP, SDK_EV_NAME, SDK_EV_ATTRIBUTES };
static const int SDK_EVENT_FIELDS[3] = {SDK_TIMESTAMP, SDK_NAME, SDK_ATTRIBUTES};
enum { SDK_LN_CONTEXT, SDK_LN_ATTRIBUTES };
static const int SDK_LINK_FIELDS[2] = {SDK_CONTEXT, SDK_ATTRIBUTES};
enum { SDK_ST_CODE, SDK_ST_DESCRIPTION };
static const int SDK_STATUS_FIELDS[2] = {SDK_STATUS_CODE, SDK_DESCRIPTION};

#define SDK_READ(o, t, fields, out) sdk_read((o), (t), (int)(sizeof(fields) / sizeof((fields)[0])), (fields), (out))

/* The fields of a span, indexed SDK_CONTEXT .. SDK_SCOPE: an exact ReadableSpan's
 * private fields, anything else's public properties.  ``attributes`` may be
 * None (a ReadableSpan built without any): callers read None as no
 * attributes, as the ``attributes`` property does. */
#define SDK_SPAN_N (SDK_SCOPE + 1)

static const int SDK_SPAN_FIELDS[SDK_SPAN_N] = {SDK_CONTEXT, SDK_PARENT, SDK_NAME, SDK_KIND, SDK_START_TIME,
                                                SDK_END_TIME, SDK_ATTRIBUTES, SDK_EVENTS, SDK_LINKS, SDK_STATUS,
                                                SDK_RESOURCE, SDK_SCOPE};

static inline int
sdk_span_read(PyObject *span, PyObject **out)
{
    return SDK_READ(span, SDK_T_SPAN, SDK_SPAN_FIELDS, out);
}


/* A SpanContext's field by its tuple index (0 trace_id, 1 span_id, 2 is_remote,
 * 3 trace_flags, 4 trace_state): the tuple item for the SDK class (a tuple
 * subclass), the property otherwise. */
static PyObject *
sdk_context_item(PyObject *ctx, Py_ssize_t index)
{
    static const char *const names[5] = {"trace_id", "span_id", "is_remote", "trace_flags", "trace_state"};
    if (SDK_IS(ctx, SDK_T_CONTEXT) && PyTuple_GET_SIZE(ctx) > index)
        return Py_NewRef(PyTuple_GET_ITEM(ctx, index));
    return PyObject_GetAttrString(ctx, names[index]);
}

#endif /* SCOPE_OTEL_SDK_FIELDS_H */
