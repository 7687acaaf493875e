/* SDK spans straight into ClickHouse Native blocks for otel_traces and scope_events.
 *
 * The C twin of scope_otel/store/rows.py (Batch.add_spans followed by
 * Batch.encode): same rows, same value conversion, same truncation and
 * escaping counters.  rows.py owns the rules; this file only makes the
 * common case (str/int/bool/float attribute values) cheap and calls back into
 * Python for everything rare (other value types, text that is not valid
 * UTF-8, resource conversion).
 *
 * Wire layout (ClickHouse Native, as clickhouse-connect writes it for an
 * INSERT): varuint column count, varuint row count, then per column its name,
 * its type and its data.  String is varuint length + bytes per row;
 * DateTime64(9) and UInt64 are 8 little-endian bytes, UInt32 4; Array(T) is
 * the cumulative end offsets (UInt64 per row) then every element's data;
 * Map(K, V) is Array(Tuple(K, V)): offsets, then all keys, then all values.
 * LowCardinality(String) columns are declared as plain String in the block
 * header (the caller passes the header): per-batch dictionaries would be
 * rebuilt anyway when the store writer merges batches (merge_blocks below,
 * which writes the real LowCardinality layout: UInt64 version 1 ahead of the
 * column, then flags, dictionary keys, row count and indexes).
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if PY_BIG_ENDIAN
#error "_chnative writes little-endian integers with memcpy"
#endif

/* -- growable byte buffers ------------------------------------------------ */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
    int borrowed; /* p is someone else's memory of fixed size: never grow */
} Buf;

static int
buf_grow(Buf *b, Py_ssize_t extra)
{
    if (b->borrowed) {
        PyErr_SetString(PyExc_BufferError, "_chnative: the output buffer is too small");
        return -1;
    }
    Py_ssize_t need = b->n + extra, cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

#define RESERVE(b, k) (((b)->n + (k) <= (b)->cap) ? 0 : buf_grow((b), (k)))

static inline int
put_raw(Buf *b, const void *src, Py_ssize_t n)
{
    if (RESERVE(b, n) < 0)
        return -1;
    memcpy(b->p + b->n, src, (size_t)n);
    b->n += n;
    return 0;
}

static inline int
put_u64(Buf *b, uint64_t v)
{
    return put_raw(b, &v, 8);
}

static inline int
put_u32(Buf *b, uint32_t v)
{
    return put_raw(b, &v, 4);
}

static inline Py_ssize_t
varint(char *out, uint64_t v)
{
    Py_ssize_t i = 0;
    while (v >= 0x80) {
        out[i++] = (char)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    out[i++] = (char)v;
    return i;
}

static inline int
put_bytes(Buf *b, const char *s, Py_ssize_t n)
{
    if (RESERVE(b, n + 10) < 0)
        return -1;
    b->n += varint(b->p + b->n, (uint64_t)n);
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}

/* -- strings -------------------------------------------------------------- */

/* A string ready to write: UTF-8 bytes, whether it had to be escaped (counted
 * once per row it is written to), and the object that owns the bytes. */
typedef struct {
    const char *p;
    Py_ssize_t n;
    int esc;
    PyObject *obj; /* strong reference or NULL (static or stack bytes) */
} Str;

typedef struct {
    Py_ssize_t max_chars;
    Py_ssize_t truncated;
    Py_ssize_t escaped;
    PyObject *text;     /* rows._text: rare value types */
    PyObject *escape;   /* rows._escape_text: str -> valid str */
    PyObject *resource; /* Batch._resource: resource -> (attrs dict, service) */
    /* The SDK's Status, BoundedList and TraceState (or NULL): their public
     * properties and __len__ are Python code returning a private field, read
     * here directly: 5 Python calls a span fewer (the benchmark's spans:
     * 2.46-2.61 us a span to encode, 2.75-3.16 before). */
    PyTypeObject *status_type, *list_type, *state_type;
} Enc;

static void
str_clear(Str *s)
{
    Py_CLEAR(s->obj);
    s->p = "";
    s->n = 0;
    s->esc = 0;
}

static inline void
str_static(Str *s, const char *text)
{
    s->p = text;
    s->n = (Py_ssize_t)strlen(text);
    s->esc = 0;
    s->obj = NULL;
}

/* Take a new reference to a str (or stringify something else) as UTF-8. */
static int
str_set(Enc *e, Str *s, PyObject *o)
{
    PyObject *u;
    s->esc = 0;
    s->obj = NULL;
    if (PyUnicode_Check(o)) {
        u = o;
        Py_INCREF(u);
    }
    else {
        u = PyObject_Str(o);
        if (u == NULL)
            return -1;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(u, &n);
    if (p == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            Py_DECREF(u);
            return -1;
        }
        PyErr_Clear();
        PyObject *fixed = PyObject_CallOneArg(e->escape, u);
        Py_DECREF(u);
        if (fixed == NULL)
            return -1;
        if (!PyUnicode_Check(fixed)) {
            Py_DECREF(fixed);
            PyErr_SetString(PyExc_TypeError, "_escape_text must return str");
            return -1;
        }
        p = PyUnicode_AsUTF8AndSize(fixed, &n);
        if (p == NULL) {
            Py_DECREF(fixed);
            return -1;
        }
        u = fixed;
        s->esc = 1;
    }
    s->p = p;
    s->n = n;
    s->obj = u;
    return 0;
}

static inline int
emit(Enc *e, Buf *b, const Str *s)
{
    e->escaped += s->esc;
    return put_bytes(b, s->p, s->n);
}

/* An attribute value as the clickhouseexporter stores it (a new str), cut to
 * max_chars (counted). */
static PyObject *
value_text(Enc *e, PyObject *v)
{
    PyObject *t;
    if (PyUnicode_CheckExact(v)) {
        Py_INCREF(v);
        t = v;
    }
    else if (PyBool_Check(v)) {
        t = PyUnicode_FromString(v == Py_True ? "true" : "false");
    }
    else if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            t = PyObject_Repr(v);
        }
        else {
            char tmp[32];
            int k = snprintf(tmp, sizeof tmp, "%lld", x);
            t = PyUnicode_FromStringAndSize(tmp, k);
        }
    }
    else if (PyFloat_CheckExact(v)) {
        t = PyObject_Repr(v);
    }
    else {
        t = PyObject_CallOneArg(e->text, v);
        if (t != NULL && !PyUnicode_Check(t)) {
            Py_DECREF(t);
            PyErr_SetString(PyExc_TypeError, "_text must return str");
            return NULL;
        }
    }
    if (t == NULL)
        return NULL;
    if (PyUnicode_GET_LENGTH(t) > e->max_chars) {
        PyObject *cut = PyUnicode_Substring(t, 0, e->max_chars);
        Py_DECREF(t);
        e->truncated++;
        t = cut;
    }
    return t;
}

/* -- attribute maps ------------------------------------------------------- */

typedef struct {
    Str k, v;
    PyObject *key; /* strong */
    PyObject *val; /* strong: the converted value before any escaping */
} Pair;

typedef struct {
    Pair *p;
    Py_ssize_t n, cap;
} Pairs;

static int
pairs_push(Pairs *ps)
{
    if (ps->n == ps->cap) {
        Py_ssize_t cap = ps->cap ? ps->cap * 2 : 32;
        Pair *p = PyMem_Realloc(ps->p, (size_t)cap * sizeof(Pair));
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        ps->p = p;
        ps->cap = cap;
    }
    memset(&ps->p[ps->n], 0, sizeof(Pair));
    ps->n++;
    return 0;
}

static void
pairs_reset(Pairs *ps)
{
    for (Py_ssize_t i = 0; i < ps->n; i++) {
        Py_CLEAR(ps->p[i].key);
        Py_CLEAR(ps->p[i].val);
        Py_CLEAR(ps->p[i].k.obj);
        Py_CLEAR(ps->p[i].v.obj);
    }
    ps->n = 0;
}

static PyObject *s_dict, *s_items;

static int
add_pair(Enc *e, Pairs *ps, PyObject *key, PyObject *value)
{
    if (pairs_push(ps) < 0)
        return -1;
    Pair *pr = &ps->p[ps->n - 1];
    Py_INCREF(key);
    pr->key = key;
    if (str_set(e, &pr->k, key) < 0)
        return -1;
    PyObject *t = value_text(e, value);
    if (t == NULL)
        return -1;
    pr->val = t;
    return str_set(e, &pr->v, t);
}

/* Append the converted items of ``attributes`` to ps (Batch._map). */
static int
convert_map(Enc *e, Pairs *ps, PyObject *attributes)
{
    PyObject *m = attributes;
    int owned = 0;
    if (m == NULL || m == Py_None)
        return 0;
    if (!PyDict_Check(m)) {
        PyObject *d = PyObject_GetAttr(m, s_dict);
        if (d == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
        }
        else {
            m = d;
            owned = 1;
        }
    }
    int rc = 0;
    if (PyDict_CheckExact(m)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(m, &pos, &k, &v)) {
            Py_INCREF(k);
            Py_INCREF(v);
            rc = add_pair(e, ps, k, v);
            Py_DECREF(k);
            Py_DECREF(v);
            if (rc < 0)
                break;
        }
    }
    else {
        int truth = PyObject_IsTrue(m);
        if (truth < 0)
            rc = -1;
        else if (truth) {
            PyObject *items = PyObject_CallMethodNoArgs(m, s_items);
            PyObject *it = items ? PyObject_GetIter(items) : NULL;
            Py_XDECREF(items);
            if (it == NULL)
                rc = -1;
            else {
                PyObject *item;
                while (rc == 0 && (item = PyIter_Next(it)) != NULL) {
                    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
                        PyErr_SetString(PyExc_TypeError, "attribute items must be (key, value) pairs");
                        rc = -1;
                    }
                    else
                        rc = add_pair(e, ps, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1));
                    Py_DECREF(item);
                }
                if (rc == 0 && PyErr_Occurred())
                    rc = -1;
                Py_DECREF(it);
            }
        }
    }
    if (owned)
        Py_DECREF(m);
    return rc;
}

/* One Map(String, String) value: the pairs [from, to) of ps. */
static int
emit_map(Enc *e, Buf *off, uint64_t *total, Buf *keys, Buf *vals, Pairs *ps, Py_ssize_t from, Py_ssize_t to,
         const Str *skip1, const Str *skip2)
{
    for (Py_ssize_t i = from; i < to; i++) {
        Pair *pr = &ps->p[i];
        if (skip1 && !pr->k.esc && pr->k.n == skip1->n && memcmp(pr->k.p, skip1->p, (size_t)pr->k.n) == 0)
            continue;
        if (skip2 && !pr->k.esc && pr->k.n == skip2->n && memcmp(pr->k.p, skip2->p, (size_t)pr->k.n) == 0)
            continue;
        if (emit(e, keys, &pr->k) < 0 || emit(e, vals, &pr->v) < 0)
            return -1;
        (*total)++;
    }
    return put_u64(off, *total);
}

static Pair *
find(Pairs *ps, Py_ssize_t from, Py_ssize_t to, const char *key, Py_ssize_t n)
{
    for (Py_ssize_t i = from; i < to; i++) {
        Pair *pr = &ps->p[i];
        if (!pr->k.esc && pr->k.n == n && memcmp(pr->k.p, key, (size_t)n) == 0)
            return pr;
    }
    return NULL;
}

/* -- ids and numbers ------------------------------------------------------- */

static const char HEX[] = "0123456789abcdef";

/* f"{x:0{width}x}" into out (width 32 or 16), or through Python for odd values. */
static int
hex_id(Enc *e, PyObject *x, char *out, int bytes, Str *s)
{
    unsigned char raw[16];
    s->obj = NULL;
    s->esc = 0;
    if (PyLong_CheckExact(x) && Py_SIZE(x) >= 0) {
        int rc;
#if PY_VERSION_HEX >= 0x030D0000
        rc = _PyLong_AsByteArray((PyLongObject *)x, raw, (size_t)bytes, 0, 0, 1);
#else
        rc = _PyLong_AsByteArray((PyLongObject *)x, raw, (size_t)bytes, 0, 0);
#endif
        if (rc == 0) {
            for (int i = 0; i < bytes; i++) {
                out[2 * i] = HEX[raw[i] >> 4];
                out[2 * i + 1] = HEX[raw[i] & 15];
            }
            s->p = out;
            s->n = 2 * bytes;
            return 0;
        }
        PyErr_Clear();
    }
    PyObject *spec = PyUnicode_FromString(bytes == 16 ? "032x" : "016x");
    if (spec == NULL)
        return -1;
    PyObject *t = PyObject_Format(x, spec);
    Py_DECREF(spec);
    if (t == NULL)
        return -1;
    int rc = str_set(e, s, t);
    Py_DECREF(t);
    return rc;
}

static int
as_i64(PyObject *o, int64_t *out)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

/* -- output ------------------------------------------------------------------ */

enum {
    T_TS, T_TID, T_SID, T_PID, T_STATE, T_NAME, T_KIND, T_SVC,
    T_RES_OFF, T_RES_K, T_RES_V, T_SCOPE, T_SCOPE_V, T_ATTR_OFF, T_ATTR_K, T_ATTR_V,
    T_DUR, T_STATUS, T_STATUS_MSG,
    T_EV_OFF, T_EV_TS, T_EV_NAME, T_EV_MOFF, T_EV_K, T_EV_V,
    T_LN_OFF, T_LN_TID, T_LN_SID, T_LN_STATE, T_LN_MOFF, T_LN_K, T_LN_V,
    T_NBUF
};
enum {
    E_TS, E_TID, E_SID, E_PID, E_SVC, E_FN, E_KIND, E_NAME, E_VAL, E_SEQ, E_HLC, E_OFF, E_K, E_V,
    E_NBUF
};

/* Buffers making up each header column, in column order (-1 ends a column). */
static const int TRACE_LAYOUT[22][5] = {
    {T_TS, -1}, {T_TID, -1}, {T_SID, -1}, {T_PID, -1}, {T_STATE, -1}, {T_NAME, -1}, {T_KIND, -1},
    {T_SVC, -1}, {T_RES_OFF, T_RES_K, T_RES_V, -1}, {T_SCOPE, -1}, {T_SCOPE_V, -1},
    {T_ATTR_OFF, T_ATTR_K, T_ATTR_V, -1}, {T_DUR, -1}, {T_STATUS, -1}, {T_STATUS_MSG, -1},
    {T_EV_OFF, T_EV_TS, -1}, {T_EV_OFF, T_EV_NAME, -1}, {T_EV_OFF, T_EV_MOFF, T_EV_K, T_EV_V, -1},
    {T_LN_OFF, T_LN_TID, -1}, {T_LN_OFF, T_LN_SID, -1}, {T_LN_OFF, T_LN_STATE, -1},
    {T_LN_OFF, T_LN_MOFF, T_LN_K, T_LN_V, -1},
};
static const int EVENT_LAYOUT[12][4] = {
    {E_TS, -1}, {E_TID, -1}, {E_SID, -1}, {E_PID, -1}, {E_SVC, -1}, {E_FN, -1}, {E_KIND, -1},
    {E_NAME, -1}, {E_VAL, -1}, {E_SEQ, -1}, {E_HLC, -1}, {E_OFF, E_K, E_V, -1},
};

/* header: a sequence of (name bytes, type bytes), one per layout column. */
static PyObject *
build_block(PyObject *header, Py_ssize_t rows, Buf *bufs, const int *layout, int width, int ncols)
{
    PyObject *fast = PySequence_Fast(header, "header must be a sequence");
    if (fast == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != ncols) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "header does not match the encoder's columns");
        return NULL;
    }
    Buf out = {0};
    char tmp[10];
    int rc = put_raw(&out, tmp, varint(tmp, (uint64_t)ncols));
    rc = rc ? rc : put_raw(&out, tmp, varint(tmp, (uint64_t)rows));
    for (int c = 0; rc == 0 && c < ncols; c++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, c);
        PyObject *name, *type;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
            || !PyBytes_Check(name = PyTuple_GET_ITEM(item, 0))
            || !PyBytes_Check(type = PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "header items must be (bytes, bytes)");
            rc = -1;
            break;
        }
        rc = put_bytes(&out, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        rc = rc ? rc : put_bytes(&out, PyBytes_AS_STRING(type), PyBytes_GET_SIZE(type));
        for (int j = 0; rc == 0 && layout[c * width + j] >= 0; j++) {
            Buf *b = &bufs[layout[c * width + j]];
            rc = put_raw(&out, b->p, b->n);
        }
    }
    Py_DECREF(fast);
    PyObject *result = rc == 0 ? PyBytes_FromStringAndSize(out.p, out.n) : NULL;
    PyMem_Free(out.p);
    return result;
}

/* -- the encoder ------------------------------------------------------------- */

static PyObject *s_context, *s_parent, *s_start_time, *s_end_time, *s_resource, *s_scope, *s_status,
    *s_name, *s_kind, *s_attributes, *s_events, *s_links, *s_trace_id, *s_span_id, *s_trace_state,
    *s_to_header, *s_value_, *s_status_code, *s_description, *s_version, *s_timestamp,
    *p_context, *p_parent, *p_start_time, *p_end_time, *p_resource, *p_scope, *p_status, *p_name, *p_kind,
    *p_attributes, *p_events, *p_links, *p_status_code, *p_description, *p_dq;

static const char *SPAN_KINDS[] = {"SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
                                   "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"};
static const char *STATUSES[] = {"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"};

/* span event name -> scope_events Kind, attribute giving Name, attribute giving Value */
static const char *EVENT_SPECS[][4] = {
    {"exception", "exception", "exception.type", "exception.message"},
    {"scope.state_change", "state_change", "scope.target", "scope.value"},
    {"scope.send", "send", "messaging.destination.name", "messaging.message.id"},
    {"scope.recv", "recv", "messaging.destination.name", "messaging.message.id"},
    {"scope.suspend", "suspend", "", ""},
    {"scope.resume", "resume", "", ""},
};
#define N_EVENT_SPECS 6
#define ARG_PREFIX "scope.arg."
#define ARG_CUT 10

/* getattr(o, fast_name) for the SDK's own classes (whose public properties
 * only return the private attribute), getattr(o, public_name) otherwise. */
static inline PyObject *
attr(PyObject *o, int fast, PyObject *fast_name, PyObject *public_name)
{
    return PyObject_GetAttr(o, fast ? fast_name : public_name);
}

/* getattr(o, name, None) with the AttributeError swallowed: new ref or NULL+error. */
static PyObject *
attr_or_none(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return v;
}

/* span.<priv> (e.g. _events), or the public span.<pub> when that is missing or
 * None and `fallback` is set.  New reference; NULL with an error set. */
static PyObject *
private_or_public(PyObject *span, PyObject *priv, PyObject *pub, int fallback)
{
    PyObject *o = attr_or_none(span, priv);
    if (o == Py_None && fallback) {
        Py_DECREF(o);
        o = PyObject_GetAttr(span, pub);
    }
    return o;
}

/* A SpanContext's field: tuple item for the SDK class, property otherwise. */
static inline PyObject *
ctx_field(PyObject *ctx, PyTypeObject *ctx_type, Py_ssize_t index, PyObject *name)
{
    if (Py_TYPE(ctx) == ctx_type && PyTuple_GET_SIZE(ctx) > index) {
        PyObject *v = PyTuple_GET_ITEM(ctx, index);
        Py_INCREF(v);
        return v;
    }
    return PyObject_GetAttr(ctx, name);
}

/* state.to_header() if state else "" */
static int
trace_state_text(Enc *e, PyObject *state, Str *s)
{
    str_static(s, "");
    if (state == Py_None)
        return 0;
    int truth = -2;
    if (Py_TYPE(state) == e->state_type) { /* TraceState: as long as its _dict */
        PyObject *d = PyObject_GetAttr(state, s_dict);
        if (d == NULL)
            PyErr_Clear();
        else {
            if (PyDict_CheckExact(d))
                truth = PyDict_GET_SIZE(d) > 0;
            Py_DECREF(d);
        }
    }
    if (truth == -2)
        truth = PyObject_IsTrue(state);
    if (truth <= 0)
        return truth;
    PyObject *h = PyObject_CallMethodNoArgs(state, s_to_header);
    if (h == NULL)
        return -1;
    int rc = str_set(e, s, h);
    Py_DECREF(h);
    return rc;
}

/* `x or ""` as a Str */
static int
or_empty(Enc *e, PyObject *x, Str *s)
{
    str_static(s, "");
    int truth = PyObject_IsTrue(x);
    if (truth <= 0)
        return truth;
    return str_set(e, s, x);
}

/* A truthy sequence as a fast sequence, or NULL with *n = 0 (no error) when empty. */
static PyObject *
seq_items(Enc *e, PyObject *o, Py_ssize_t *n, int *err)
{
    *n = 0;
    *err = 0;
    if (o == Py_None)
        return NULL;
    if (Py_TYPE(o) == e->list_type) { /* BoundedList: its deque, as its __iter__ lists it */
        PyObject *dq = PyObject_GetAttr(o, p_dq);
        if (dq == NULL)
            PyErr_Clear();
        else {
            Py_ssize_t size = PyObject_Size(dq);
            PyObject *fast = size > 0 ? PySequence_Fast(dq, "a span's events and links must be iterable") : NULL;
            Py_DECREF(dq);
            if (size > 0 && fast != NULL) {
                *n = PySequence_Fast_GET_SIZE(fast);
                return fast;
            }
            if (size == 0)
                return NULL;
            PyErr_Clear(); /* not a deque after all: the public way */
        }
    }
    if (PyTuple_CheckExact(o) || PyList_CheckExact(o)) {
        if (PySequence_Fast_GET_SIZE(o) == 0)
            return NULL;
    }
    else {
        int truth = PyObject_IsTrue(o);
        if (truth <= 0) {
            *err = truth < 0;
            return NULL;
        }
    }
    PyObject *fast = PySequence_Fast(o, "span events and links must be iterable");
    if (fast == NULL) {
        *err = 1;
        return NULL;
    }
    *n = PySequence_Fast_GET_SIZE(fast);
    return fast;
}

typedef struct {
    int64_t ts;
    Str name;
    Py_ssize_t from, to; /* its attributes in the event pairs */
    int spec;            /* index in EVENT_SPECS or -1 */
} Ev;

typedef struct {
    Buf t[T_NBUF], ev[E_NBUF];
    Pairs attrs, evattrs, lnattrs, res;
    Ev *evs;
    Py_ssize_t evcap;
    PyObject *res_obj, *scope_obj; /* borrowed identity of the cached resource / scope */
    PyObject *res_keep, *scope_keep;
    Str svc, scope_name, scope_version;
} State;

static void
state_free(State *st)
{
    for (int i = 0; i < T_NBUF; i++)
        PyMem_Free(st->t[i].p);
    for (int i = 0; i < E_NBUF; i++)
        PyMem_Free(st->ev[i].p);
    pairs_reset(&st->attrs);
    pairs_reset(&st->evattrs);
    pairs_reset(&st->lnattrs);
    pairs_reset(&st->res);
    PyMem_Free(st->attrs.p);
    PyMem_Free(st->evattrs.p);
    PyMem_Free(st->lnattrs.p);
    PyMem_Free(st->res.p);
    PyMem_Free(st->evs);
    str_clear(&st->svc);
    str_clear(&st->scope_name);
    str_clear(&st->scope_version);
    Py_CLEAR(st->res_keep);
    Py_CLEAR(st->scope_keep);
}

static int
set_resource(Enc *e, State *st, PyObject *resource)
{
    pairs_reset(&st->res);
    str_clear(&st->svc);
    Py_CLEAR(st->res_keep);
    st->res_obj = NULL;
    PyObject *r = PyObject_CallOneArg(e->resource, resource);
    if (r == NULL)
        return -1;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2 || !PyDict_Check(PyTuple_GET_ITEM(r, 0))) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "_resource must return (dict, str)");
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    PyObject *d = PyTuple_GET_ITEM(r, 0);
    int rc = 0;
    while (rc == 0 && PyDict_Next(d, &pos, &k, &v)) {
        /* already converted (and counted) by Batch._resource: only encode */
        if (pairs_push(&st->res) < 0) {
            rc = -1;
            break;
        }
        Pair *pr = &st->res.p[st->res.n - 1];
        Py_INCREF(k);
        pr->key = k;
        Py_INCREF(v);
        pr->val = v;
        rc = str_set(e, &pr->k, k);
        rc = rc ? rc : str_set(e, &pr->v, v);
    }
    rc = rc ? rc : str_set(e, &st->svc, PyTuple_GET_ITEM(r, 1));
    Py_DECREF(r);
    if (rc == 0) {
        Py_INCREF(resource);
        st->res_keep = resource;
        st->res_obj = resource;
    }
    return rc;
}

static int
set_scope(Enc *e, State *st, PyObject *scope)
{
    str_clear(&st->scope_name);
    str_clear(&st->scope_version);
    Py_CLEAR(st->scope_keep);
    st->scope_obj = NULL;
    if (scope != Py_None) {
        PyObject *name = PyObject_GetAttr(scope, s_name);
        if (name == NULL)
            return -1;
        int rc = str_set(e, &st->scope_name, name);
        Py_DECREF(name);
        if (rc < 0)
            return -1;
        PyObject *version = PyObject_GetAttr(scope, s_version);
        if (version == NULL)
            return -1;
        rc = or_empty(e, version, &st->scope_version);
        Py_DECREF(version);
        if (rc < 0)
            return -1;
    }
    Py_INCREF(scope);
    st->scope_keep = scope;
    st->scope_obj = scope;
    return 0;
}

/* The enum member's _value_ as a small index, or -1. */
static Py_ssize_t
enum_index(PyObject *member, Py_ssize_t limit)
{
    PyObject *v = PyObject_GetAttr(member, s_value_);
    if (v == NULL)
        return -2;
    Py_ssize_t i = -1;
    if (PyLong_Check(v)) {
        long x = PyLong_AsLong(v);
        if (x == -1 && PyErr_Occurred())
            PyErr_Clear();
        else if (x >= 0 && x < limit)
            i = x;
    }
    Py_DECREF(v);
    return i;
}

static int
put_ts(Buf *b, int64_t v)
{
    return put_u64(b, (uint64_t)v);
}

/* One scope_events row. */
static int
event_row(Enc *e, State *st, int64_t when, const Str *tid, const Str *sid, const Str *pid, const Str *fn,
          const char *kind, const Str *name, const Str *value, uint32_t seq, const Str *hlc,
          Pairs *rest, Py_ssize_t from, Py_ssize_t to, const Str *skip1, const Str *skip2, uint64_t *kv_total)
{
    Buf *b = st->ev;
    Str k;
    str_static(&k, kind);
    if (put_ts(&b[E_TS], when) < 0 || emit(e, &b[E_TID], tid) < 0 || emit(e, &b[E_SID], sid) < 0
        || emit(e, &b[E_PID], pid) < 0 || emit(e, &b[E_SVC], &st->svc) < 0 || emit(e, &b[E_FN], fn) < 0
        || emit(e, &b[E_KIND], &k) < 0 || emit(e, &b[E_NAME], name) < 0 || emit(e, &b[E_VAL], value) < 0
        || put_u32(&b[E_SEQ], seq) < 0 || emit(e, &b[E_HLC], hlc) < 0)
        return -1;
    if (rest == NULL)
        return put_u64(&b[E_OFF], *kv_total);
    return emit_map(e, &b[E_OFF], kv_total, &b[E_K], &b[E_V], rest, from, to, skip1, skip2);
}

static inline int
key_is(const Pair *pr, const char *key, Py_ssize_t n)
{
    return !pr->k.esc && pr->k.n == n && memcmp(pr->k.p, key, (size_t)n) == 0;
}

static PyObject *
encode_spans(PyObject *self, PyObject *args)
{
    PyObject *spans, *trace_header, *event_header, *readable_type, *ctx_type, *plain = NULL;
    Enc e = {0};
    if (!PyArg_ParseTuple(args, "OnOOOOOOO|O", &spans, &e.max_chars, &trace_header, &event_header, &e.text,
                          &e.escape, &e.resource, &readable_type, &ctx_type, &plain))
        return NULL;
    if (!PyType_Check(readable_type) || !PyType_Check(ctx_type)) {
        PyErr_SetString(PyExc_TypeError, "readable_type and ctx_type must be types");
        return NULL;
    }
    if (plain != NULL) { /* (Status, BoundedList, TraceState): see Enc */
        if (!PyTuple_Check(plain) || PyTuple_GET_SIZE(plain) != 3 || !PyType_Check(PyTuple_GET_ITEM(plain, 0))
            || !PyType_Check(PyTuple_GET_ITEM(plain, 1)) || !PyType_Check(PyTuple_GET_ITEM(plain, 2))) {
            PyErr_SetString(PyExc_TypeError, "plain_types must be (Status, BoundedList, TraceState) types");
            return NULL;
        }
        e.status_type = (PyTypeObject *)PyTuple_GET_ITEM(plain, 0);
        e.list_type = (PyTypeObject *)PyTuple_GET_ITEM(plain, 1);
        e.state_type = (PyTypeObject *)PyTuple_GET_ITEM(plain, 2);
    }
    PyObject *seq = PySequence_Fast(spans, "spans must be a sequence");
    if (seq == NULL)
        return NULL;
    State st;
    memset(&st, 0, sizeof st);
    PyObject *result = NULL;
    PyObject *span = NULL, *ctx = NULL, *parent = NULL, *o = NULL, *events = NULL, *links = NULL;
    Py_ssize_t nspans = PySequence_Fast_GET_SIZE(seq);
    uint64_t res_total = 0, attr_total = 0, ev_total = 0, ev_kv = 0, ln_total = 0, ln_kv = 0, e_kv = 0;
    Py_ssize_t nrows_ev = 0;
    Buf *t = st.t;
    char tid_buf[32], sid_buf[16], pid_buf[16], lt_buf[32], ls_buf[16];
    Str tid = {0}, sid = {0}, pid = {0}, state = {0}, name = {0}, status_msg = {0}, lstate = {0};
    Str fn = {0}, hlc = {0}, empty;
    str_static(&empty, "");

#define FAIL goto error
#define CHK(x) do { if ((x) < 0) FAIL; } while (0)
#define DROP(x) Py_CLEAR(x)

    for (Py_ssize_t i = 0; i < nspans; i++) {
        span = PySequence_Fast_GET_ITEM(seq, i);
        int fast = Py_TYPE(span) == (PyTypeObject *)readable_type;
        int64_t start = 0, end;

        /* ids */
        ctx = attr(span, fast, p_context, s_context);
        if (ctx == NULL)
            FAIL;
        o = ctx_field(ctx, (PyTypeObject *)ctx_type, 0, s_trace_id);
        if (o == NULL || hex_id(&e, o, tid_buf, 16, &tid) < 0)
            FAIL;
        DROP(o);
        o = ctx_field(ctx, (PyTypeObject *)ctx_type, 1, s_span_id);
        if (o == NULL || hex_id(&e, o, sid_buf, 8, &sid) < 0)
            FAIL;
        DROP(o);
        parent = attr(span, fast, p_parent, s_parent);
        if (parent == NULL)
            FAIL;
        if (parent == Py_None)
            str_static(&pid, "");
        else {
            o = ctx_field(parent, (PyTypeObject *)ctx_type, 1, s_span_id);
            if (o == NULL || hex_id(&e, o, pid_buf, 8, &pid) < 0)
                FAIL;
            DROP(o);
        }
        DROP(parent);
        o = ctx_field(ctx, (PyTypeObject *)ctx_type, 4, s_trace_state);
        if (o == NULL || trace_state_text(&e, o, &state) < 0)
            FAIL;
        DROP(o);
        DROP(ctx);

        /* times: start = span.start_time or 0; end = span.end_time or start */
        o = attr(span, fast, p_start_time, s_start_time);
        if (o == NULL)
            FAIL;
        int truth = PyObject_IsTrue(o);
        if (truth < 0 || (truth && as_i64(o, &start) < 0))
            FAIL;
        DROP(o);
        end = start;
        o = attr(span, fast, p_end_time, s_end_time);
        if (o == NULL)
            FAIL;
        truth = PyObject_IsTrue(o);
        if (truth < 0 || (truth && as_i64(o, &end) < 0))
            FAIL;
        DROP(o);

        /* resource, scope */
        o = attr(span, fast, p_resource, s_resource);
        if (o == NULL)
            FAIL;
        if (o != st.res_obj)
            CHK(set_resource(&e, &st, o));
        DROP(o);
        o = attr(span, fast, p_scope, s_scope);
        if (o == NULL)
            FAIL;
        if (o != st.scope_obj)
            CHK(set_scope(&e, &st, o));
        DROP(o);

        /* attributes: span._attributes, or span.attributes when missing/None */
        pairs_reset(&st.attrs);
        o = private_or_public(span, p_attributes, s_attributes, 1);
        if (o == NULL)
            FAIL;
        CHK(convert_map(&e, &st.attrs, o));
        DROP(o);

        /* name, kind, status */
        o = attr(span, fast, p_name, s_name);
        if (o == NULL || str_set(&e, &name, o) < 0)
            FAIL;
        DROP(o);
        o = attr(span, fast, p_kind, s_kind);
        if (o == NULL)
            FAIL;
        Py_ssize_t kind = enum_index(o, 5);
        DROP(o);
        if (kind == -2)
            FAIL;
        o = attr(span, fast, p_status, s_status);
        if (o == NULL)
            FAIL;
        int plain = Py_TYPE(o) == e.status_type;
        PyObject *code = PyObject_GetAttr(o, plain ? p_status_code : s_status_code);
        if (code == NULL)
            FAIL;
        Py_ssize_t status = enum_index(code, 3);
        Py_DECREF(code);
        if (status == -2)
            FAIL;
        PyObject *desc = PyObject_GetAttr(o, plain ? p_description : s_description);
        if (desc == NULL)
            FAIL;
        int rc = or_empty(&e, desc, &status_msg);
        Py_DECREF(desc);
        if (rc < 0)
            FAIL;
        DROP(o);

        /* trace row */
        Str ks, ss;
        str_static(&ks, kind >= 0 ? SPAN_KINDS[kind] : "SPAN_KIND_UNSPECIFIED");
        str_static(&ss, status >= 0 ? STATUSES[status] : "STATUS_CODE_UNSET");
        CHK(put_ts(&t[T_TS], start));
        CHK(emit(&e, &t[T_TID], &tid));
        CHK(emit(&e, &t[T_SID], &sid));
        CHK(emit(&e, &t[T_PID], &pid));
        CHK(emit(&e, &t[T_STATE], &state));
        CHK(emit(&e, &t[T_NAME], &name));
        CHK(emit(&e, &t[T_KIND], &ks));
        CHK(emit(&e, &t[T_SVC], &st.svc));
        CHK(emit_map(&e, &t[T_RES_OFF], &res_total, &t[T_RES_K], &t[T_RES_V], &st.res, 0, st.res.n, NULL, NULL));
        CHK(emit(&e, &t[T_SCOPE], &st.scope_name));
        CHK(emit(&e, &t[T_SCOPE_V], &st.scope_version));
        CHK(emit_map(&e, &t[T_ATTR_OFF], &attr_total, &t[T_ATTR_K], &t[T_ATTR_V], &st.attrs, 0, st.attrs.n,
                     NULL, NULL));
        CHK(put_u64(&t[T_DUR], end > start ? (uint64_t)end - (uint64_t)start : 0));
        CHK(emit(&e, &t[T_STATUS], &ss));
        CHK(emit(&e, &t[T_STATUS_MSG], &status_msg));

        /* events: span._events if present, else span.events */
        pairs_reset(&st.evattrs);
        o = private_or_public(span, p_events, s_events, !fast);
        if (o == NULL)
            FAIL;
        Py_ssize_t nev;
        int err;
        events = seq_items(&e, o, &nev, &err);
        DROP(o);
        if (err)
            FAIL;
        if (nev > st.evcap) {
            Ev *p = PyMem_Realloc(st.evs, (size_t)nev * sizeof(Ev));
            if (p == NULL) {
                PyErr_NoMemory();
                FAIL;
            }
            memset(p + st.evcap, 0, (size_t)(nev - st.evcap) * sizeof(Ev)); /* the error path clears them */
            st.evs = p;
            st.evcap = nev;
        }
        for (Py_ssize_t j = 0; j < nev; j++) {
            PyObject *ev = PySequence_Fast_GET_ITEM(events, j);
            Ev *x = &st.evs[j];
            x->name.obj = NULL;
            x->from = st.evattrs.n;
            x->spec = -1;
            o = PyObject_GetAttr(ev, s_timestamp);
            if (o == NULL || as_i64(o, &x->ts) < 0)
                FAIL;
            DROP(o);
            o = PyObject_GetAttr(ev, s_name);
            if (o == NULL)
                FAIL;
            if (PyUnicode_Check(o))
                for (int k = 0; k < N_EVENT_SPECS; k++)
                    if (PyUnicode_CompareWithASCIIString(o, EVENT_SPECS[k][0]) == 0) {
                        x->spec = k;
                        break;
                    }
            rc = str_set(&e, &x->name, o);
            DROP(o);
            if (rc < 0)
                FAIL;
            o = PyObject_GetAttr(ev, s_attributes);
            if (o == NULL || convert_map(&e, &st.evattrs, o) < 0)
                FAIL;
            DROP(o);
            x->to = st.evattrs.n;
            CHK(put_ts(&t[T_EV_TS], x->ts));
            CHK(emit(&e, &t[T_EV_NAME], &x->name));
            CHK(emit_map(&e, &t[T_EV_MOFF], &ev_kv, &t[T_EV_K], &t[T_EV_V], &st.evattrs, x->from, x->to, NULL,
                         NULL));
        }
        ev_total += (uint64_t)nev;
        CHK(put_u64(&t[T_EV_OFF], ev_total));

        /* links */
        o = private_or_public(span, p_links, s_links, !fast);
        if (o == NULL)
            FAIL;
        Py_ssize_t nln;
        links = seq_items(&e, o, &nln, &err);
        DROP(o);
        if (err)
            FAIL;
        for (Py_ssize_t j = 0; j < nln; j++) {
            PyObject *ln = PySequence_Fast_GET_ITEM(links, j);
            Str lt = {0}, ls = {0};
            PyObject *lctx = PyObject_GetAttr(ln, s_context);
            if (lctx == NULL)
                FAIL;
            o = ctx_field(lctx, (PyTypeObject *)ctx_type, 0, s_trace_id);
            rc = o == NULL ? -1 : hex_id(&e, o, lt_buf, 16, &lt);
            DROP(o);
            if (rc == 0) {
                o = ctx_field(lctx, (PyTypeObject *)ctx_type, 1, s_span_id);
                rc = o == NULL ? -1 : hex_id(&e, o, ls_buf, 8, &ls);
                DROP(o);
            }
            if (rc == 0) {
                o = ctx_field(lctx, (PyTypeObject *)ctx_type, 4, s_trace_state);
                rc = o == NULL ? -1 : trace_state_text(&e, o, &lstate);
                DROP(o);
            }
            Py_DECREF(lctx);
            if (rc == 0)
                rc = emit(&e, &t[T_LN_TID], &lt);
            if (rc == 0)
                rc = emit(&e, &t[T_LN_SID], &ls);
            if (rc == 0)
                rc = emit(&e, &t[T_LN_STATE], &lstate);
            str_clear(&lt);
            str_clear(&ls);
            str_clear(&lstate);
            if (rc < 0)
                FAIL;
            pairs_reset(&st.lnattrs);
            o = PyObject_GetAttr(ln, s_attributes);
            if (o == NULL || convert_map(&e, &st.lnattrs, o) < 0)
                FAIL;
            DROP(o);
            CHK(emit_map(&e, &t[T_LN_MOFF], &ln_kv, &t[T_LN_K], &t[T_LN_V], &st.lnattrs, 0, st.lnattrs.n, NULL,
                         NULL));
        }
        ln_total += (uint64_t)nln;
        CHK(put_u64(&t[T_LN_OFF], ln_total));
        DROP(links);

        /* scope_events (Batch._explode) */
        Pair *pkind = find(&st.attrs, 0, st.attrs.n, "scope.kind", 10);
        if (nev > 0 || pkind != NULL) {
            Pair *pret = find(&st.attrs, 0, st.attrs.n, "scope.return", 12);
            Pair *pfn = find(&st.attrs, 0, st.attrs.n, "code.function.name", 18);
            Pair *pns = find(&st.attrs, 0, st.attrs.n, "code.namespace", 14);
            Pair *phlc = find(&st.attrs, 0, st.attrs.n, "scope.hlc", 9);
            str_static(&fn, "");
            if (pfn != NULL && pns != NULL && pfn->v.n > 0 && pns->v.n > 0) {
                if (pfn->v.esc || pns->v.esc) {
                    /* f"{namespace}:{function}" escaped as a whole, like the Python path */
                    PyObject *joined = PyUnicode_FromFormat("%U:%U", pns->val, pfn->val);
                    if (joined == NULL)
                        FAIL;
                    rc = str_set(&e, &fn, joined);
                    Py_DECREF(joined);
                    if (rc < 0)
                        FAIL;
                    goto have_fn;
                }
                Py_ssize_t n = pns->v.n + 1 + pfn->v.n;
                fn.obj = PyBytes_FromStringAndSize(NULL, n);
                if (fn.obj == NULL)
                    FAIL;
                char *buf = PyBytes_AS_STRING(fn.obj);
                memcpy(buf, pns->v.p, (size_t)pns->v.n);
                buf[pns->v.n] = ':';
                memcpy(buf + pns->v.n + 1, pfn->v.p, (size_t)pfn->v.n);
                fn.p = PyBytes_AS_STRING(fn.obj);
                fn.n = n;
            }
            else if (pfn != NULL) {
                fn = pfn->v;
                fn.obj = NULL; /* borrowed from the pair */
            }
        have_fn:
            if (phlc != NULL) {
                hlc = phlc->v;
                hlc.obj = NULL;
            }
            else
                str_static(&hlc, "");
            uint32_t seqno = 0;
            if (pkind != NULL) {
                for (Py_ssize_t j = 0; j < st.attrs.n; j++) {
                    Pair *pr = &st.attrs.p[j];
                    Str argname;
                    if (pr->k.n < ARG_CUT || memcmp(pr->k.p, ARG_PREFIX, ARG_CUT) != 0)
                        continue;
                    argname.obj = NULL;
                    if (pr->k.esc) {
                        /* the original key failed UTF-8: escape its tail, not the escaped text */
                        PyObject *tail = PyUnicode_Substring(pr->key, ARG_CUT, PY_SSIZE_T_MAX);
                        if (tail == NULL)
                            FAIL;
                        rc = str_set(&e, &argname, tail);
                        Py_DECREF(tail);
                        if (rc < 0)
                            FAIL;
                    }
                    else {
                        argname.p = pr->k.p + ARG_CUT;
                        argname.n = pr->k.n - ARG_CUT;
                        argname.esc = 0;
                    }
                    rc = event_row(&e, &st, start, &tid, &sid, &pid, &fn, "arg", &argname, &pr->v, seqno++, &hlc,
                                   NULL, 0, 0, NULL, NULL, &e_kv);
                    str_clear(&argname);
                    if (rc < 0)
                        FAIL;
                    nrows_ev++;
                }
            }
            for (Py_ssize_t j = 0; j < nev; j++) {
                Ev *x = &st.evs[j];
                if (x->spec < 0)
                    continue;
                const char **spec = EVENT_SPECS[x->spec];
                Str nk, vk;
                str_static(&nk, spec[2]);
                str_static(&vk, spec[3]);
                Pair *pn = find(&st.evattrs, x->from, x->to, nk.p, nk.n);
                Pair *pv = find(&st.evattrs, x->from, x->to, vk.p, vk.n);
                CHK(event_row(&e, &st, x->ts, &tid, &sid, &pid, &fn, spec[1], pn ? &pn->v : &empty,
                              pv ? &pv->v : &empty, seqno++, &hlc, &st.evattrs, x->from, x->to, &nk, &vk, &e_kv));
                nrows_ev++;
            }
            if (pret != NULL) {
                CHK(event_row(&e, &st, end, &tid, &sid, &pid, &fn, "return", &empty, &pret->v, seqno++, &hlc,
                              NULL, 0, 0, NULL, NULL, &e_kv));
                nrows_ev++;
            }
            str_clear(&fn);
            hlc.obj = NULL;
        }
        for (Py_ssize_t j = 0; j < nev; j++)
            str_clear(&st.evs[j].name);
        DROP(events);
        str_clear(&tid);
        str_clear(&sid);
        str_clear(&pid);
        str_clear(&state);
        str_clear(&name);
        str_clear(&status_msg);
    }

    {
        PyObject *traces = Py_None, *evblock = Py_None;
        Py_INCREF(Py_None);
        Py_INCREF(Py_None);
        if (nspans > 0) {
            Py_DECREF(traces);
            traces = build_block(trace_header, nspans, st.t, &TRACE_LAYOUT[0][0], 5, 22);
        }
        if (traces != NULL && nrows_ev > 0) {
            Py_DECREF(evblock);
            evblock = build_block(event_header, nrows_ev, st.ev, &EVENT_LAYOUT[0][0], 4, 12);
        }
        if (traces != NULL && evblock != NULL)
            result = Py_BuildValue("(NnNnnn)", traces, nspans, evblock, nrows_ev, e.truncated, e.escaped);
        else {
            Py_XDECREF(traces);
            Py_XDECREF(evblock);
        }
    }
    state_free(&st);
    Py_DECREF(seq);
    return result;

error:
    Py_XDECREF(ctx);
    Py_XDECREF(parent);
    Py_XDECREF(o);
    Py_XDECREF(events);
    Py_XDECREF(links);
    str_clear(&tid);
    str_clear(&sid);
    str_clear(&pid);
    str_clear(&state);
    str_clear(&name);
    str_clear(&status_msg);
    str_clear(&fn);
    if (st.evs != NULL)
        for (Py_ssize_t j = 0; j < st.evcap; j++)
            Py_CLEAR(st.evs[j].name.obj);
    state_free(&st);
    Py_DECREF(seq);
    return NULL;
}


/* -- merging Native blocks ------------------------------------------------------
 *
 * chDB pays a fixed cost per block on insert (type conversion, squashing):
 * 1.4-2 us per span with the exporter's 512-row blocks, measured.  The store
 * writer therefore merges the blocks of many batches into one before its
 * INSERT, and, given the tables' column types, writes the columns they
 * declare LowCardinality(String) as such (one dictionary per merged block;
 * chDB then converts nothing).  Only the types the C encoder writes are
 * understood; a block with any other type (e.g. clickhouse-connect's
 * LowCardinality) and everything after it pass through untouched.
 */

enum { TY_FIXED, TY_STRING, TY_ARRAY, TY_MAP, TY_LC };

typedef struct Ty {
    int kind;
    int width;          /* TY_FIXED */
    struct Ty *a, *b;   /* TY_ARRAY: a; TY_MAP: a (keys), b (values) */
} Ty;

static void
ty_free(Ty *t)
{
    if (t == NULL)
        return;
    ty_free(t->a);
    ty_free(t->b);
    PyMem_Free(t);
}

static int
eat(const char **p, const char *end, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(end - *p) >= n && memcmp(*p, word, n) == 0) {
        *p += n;
        return 1;
    }
    return 0;
}

/* Parse one type at *p; NULL (no exception) when unsupported. */
static Ty *
ty_parse(const char **p, const char *end)
{
    Ty *t = PyMem_Calloc(1, sizeof(Ty));
    if (t == NULL)
        return NULL;
    if (eat(p, end, "String"))
        t->kind = TY_STRING;
    else if (eat(p, end, "LowCardinality(String)"))
        t->kind = TY_LC; /* only in target types: blocks with it are not merged */
    else if (eat(p, end, "DateTime64(9)") || eat(p, end, "UInt64") || eat(p, end, "Int64")) {
        t->kind = TY_FIXED;
        t->width = 8;
    }
    else if (eat(p, end, "UInt32")) {
        t->kind = TY_FIXED;
        t->width = 4;
    }
    else if (eat(p, end, "Array(")) {
        t->kind = TY_ARRAY;
        if ((t->a = ty_parse(p, end)) == NULL || !eat(p, end, ")"))
            goto bad;
    }
    else if (eat(p, end, "Map(")) {
        t->kind = TY_MAP;
        if ((t->a = ty_parse(p, end)) == NULL || !eat(p, end, ", ") || (t->b = ty_parse(p, end)) == NULL
            || !eat(p, end, ")"))
            goto bad;
    }
    else
        goto bad;
    return t;
bad:
    ty_free(t);
    return NULL;
}

static int
read_varint(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        unsigned char c = (unsigned char)*(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* The end of n values of type t starting at p, or NULL when the data is short. */
static const char *
ty_skip(const Ty *t, const char *p, const char *end, uint64_t n)
{
    switch (t->kind) {
    case TY_FIXED:
        if ((uint64_t)(end - p) / (uint64_t)t->width < n)
            return NULL;
        return p + n * (uint64_t)t->width;
    case TY_STRING:
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len;
            if (read_varint(&p, end, &len) < 0 || (uint64_t)(end - p) < len)
                return NULL;
            p += len;
        }
        return p;
    case TY_LC:
        return NULL;
    default: {
        if ((uint64_t)(end - p) / 8 < n)
            return NULL;
        uint64_t total = 0;
        if (n > 0)
            memcpy(&total, p + (n - 1) * 8, 8);
        p += n * 8;
        p = ty_skip(t->a, p, end, total);
        if (p != NULL && t->kind == TY_MAP)
            p = ty_skip(t->b, p, end, total);
        return p;
    }
    }
}

/* A block as its columns' headers and data segments: per column, the header
 * (name and type) and the type's segments in wire order: an offsets array
 * (which merging rebases) or plain data (copied as is). */
#define MAX_SEGS 8

typedef struct {
    const char *head;
    Py_ssize_t head_len;
    const char *name, *type;
    Py_ssize_t name_len, type_len;
    int nseg;
    uint64_t seg_count[MAX_SEGS]; /* values in the segment (offsets: rows of the container) */
    const char *seg[MAX_SEGS];
    Py_ssize_t seg_len[MAX_SEGS];
    char is_off[MAX_SEGS];
} Col;

typedef struct {
    const char *start, *end; /* the whole block */
    uint64_t cols, rows;
    Col *col;
} Block;

/* Record the segments of n values of type t at p; returns the end or NULL. */
static const char *
ty_segments(const Ty *t, const char *p, const char *end, uint64_t n, Col *c)
{
    if (c->nseg >= MAX_SEGS)
        return NULL;
    int k = c->nseg++;
    c->seg[k] = p;
    c->is_off[k] = 0;
    c->seg_count[k] = n;
    if (t->kind == TY_FIXED || t->kind == TY_STRING) {
        const char *e = ty_skip(t, p, end, n);
        if (e != NULL)
            c->seg_len[k] = e - p;
        return e;
    }
    if ((uint64_t)(end - p) / 8 < n)
        return NULL;
    uint64_t total = 0;
    if (n > 0)
        memcpy(&total, p + (n - 1) * 8, 8);
    c->is_off[k] = 1;
    c->seg_len[k] = (Py_ssize_t)(n * 8);
    p += n * 8;
    p = ty_segments(t->a, p, end, total, c);
    if (p != NULL && t->kind == TY_MAP)
        p = ty_segments(t->b, p, end, total, c);
    return p;
}

/* Scan one block.  0: b filled; 1: a type merging does not know (b unusable);
 * -1: error set; -2: malformed. */
static int
block_scan(const char *p, const char *end, Block *b)
{
    b->start = p;
    b->col = NULL;
    if (read_varint(&p, end, &b->cols) < 0 || read_varint(&p, end, &b->rows) < 0)
        return -2;
    if (b->cols > 4096)
        return 1;
    b->col = PyMem_Calloc((size_t)(b->cols ? b->cols : 1), sizeof(Col));
    if (b->col == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint64_t i = 0; i < b->cols; i++) {
        Col *c = &b->col[i];
        uint64_t len;
        c->head = p;
        if (read_varint(&p, end, &len) < 0 || (uint64_t)(end - p) < len)
            return -2;
        c->name = p;
        c->name_len = (Py_ssize_t)len;
        p += len;
        if (read_varint(&p, end, &len) < 0 || (uint64_t)(end - p) < len)
            return -2;
        const char *tp = p, *tend = p + len;
        c->type = p;
        c->type_len = (Py_ssize_t)len;
        p = tend;
        c->head_len = p - c->head;
        Ty *t = ty_parse(&tp, tend);
        if (t == NULL || tp != tend || memmem(c->type, (size_t)len, "LowCardinality", 14) != NULL) {
            ty_free(t);
            return 1;
        }
        p = ty_segments(t, p, end, b->rows, c);
        ty_free(t);
        if (p == NULL)
            return -2;
    }
    b->end = p;
    return 0;
}

static int
same_header(const Block *x, const Block *y)
{
    if (x->cols != y->cols)
        return 0;
    for (uint64_t i = 0; i < x->cols; i++) {
        const Col *a = &x->col[i], *b = &y->col[i];
        if (a->head_len != b->head_len || memcmp(a->head, b->head, (size_t)a->head_len) != 0)
            return 0;
    }
    return 1;
}

/* The segment tree of a type, in wire order: the kind of each segment and, where
 * asked (non-NULL), its width and its parent segment (-1 at the top). */
static void
ty_flatten(const Ty *t, int parent, char *kinds, int *widths, int *parents, int *n)
{
    int me = *n;
    if (me < MAX_SEGS) {
        kinds[me] = (char)t->kind;
        if (widths != NULL)
            widths[me] = t->width;
        if (parents != NULL)
            parents[me] = parent;
    }
    (*n)++;
    if (t->kind == TY_ARRAY || t->kind == TY_MAP)
        ty_flatten(t->a, me, kinds, widths, parents, n);
    if (t->kind == TY_MAP)
        ty_flatten(t->b, me, kinds, widths, parents, n);
}

/* A quick hash of short strings, eight bytes at a time (dictionary keys are names). */
static inline uint64_t
fnv1a(const char *p, Py_ssize_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, (size_t)n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 29;
    return h;
}

typedef struct {
    const char *p;
    Py_ssize_t n;
} Key;

/* Strings turned into LowCardinality(String) data: one dictionary (first
 * appearance order) and an index per value.  lc_add the values in row order,
 * then lc_write. */
typedef struct {
    int64_t *slots; /* -1 or index into keys */
    Key *keys;
    uint32_t *index;
    size_t cap, nkeys, keycap;
    uint64_t rows, total;
    uint32_t last; /* the previous value's index */
} Lc;

static void
lc_free(Lc *lc)
{
    PyMem_Free(lc->slots);
    PyMem_Free(lc->keys);
    PyMem_Free(lc->index);
}

static int
lc_init(Lc *lc, uint64_t total)
{
    memset(lc, 0, sizeof(*lc));
    lc->cap = 1024;
    lc->keycap = 256;
    lc->total = total;
    lc->slots = PyMem_Malloc(lc->cap * sizeof(int64_t));
    lc->keys = PyMem_Malloc(lc->keycap * sizeof(Key));
    lc->index = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(uint32_t));
    if (lc->slots == NULL || lc->keys == NULL || lc->index == NULL) {
        lc_free(lc);
        PyErr_NoMemory();
        return -1;
    }
    memset(lc->slots, 0xff, lc->cap * sizeof(int64_t));
    return 0;
}

static int
lc_rehash(Lc *lc)
{
    size_t ncap = lc->cap * 4;
    int64_t *ns = PyMem_Malloc(ncap * sizeof(int64_t));
    if (ns == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(ns, 0xff, ncap * sizeof(int64_t));
    for (size_t e = 0; e < lc->nkeys; e++) {
        size_t a = (size_t)fnv1a(lc->keys[e].p, lc->keys[e].n) & (ncap - 1);
        while (ns[a] >= 0)
            a = (a + 1) & (ncap - 1);
        ns[a] = (int64_t)e;
    }
    PyMem_Free(lc->slots);
    lc->slots = ns;
    lc->cap = ncap;
    return 0;
}

static inline int
lc_add(Lc *lc, const char *sp, Py_ssize_t len)
{
    if (lc->rows >= lc->total)
        return -2;
    /* Attribute keys come in the same order row after row, and a column often
     * repeats its value: the previous value and the one after it in the
     * dictionary are tried before hashing. */
    for (uint32_t guess = lc->last; guess < lc->nkeys && guess <= lc->last + 1; guess++) {
        const Key *key = &lc->keys[guess];
        if (key->n == len && memcmp(key->p, sp, (size_t)len) == 0) {
            lc->index[lc->rows++] = lc->last = guess;
            return 0;
        }
    }
    size_t at = (size_t)fnv1a(sp, len) & (lc->cap - 1);
    while (lc->slots[at] >= 0) {
        const Key *key = &lc->keys[lc->slots[at]];
        if (key->n == len && memcmp(key->p, sp, (size_t)len) == 0) {
            lc->index[lc->rows++] = lc->last = (uint32_t)lc->slots[at];
            return 0;
        }
        at = (at + 1) & (lc->cap - 1);
    }
    if (lc->nkeys >= UINT32_MAX)
        return -2;
    if (lc->nkeys == lc->keycap) {
        Key *grown = PyMem_Realloc(lc->keys, lc->keycap * 2 * sizeof(Key));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        lc->keys = grown;
        lc->keycap *= 2;
    }
    lc->keys[lc->nkeys].p = sp;
    lc->keys[lc->nkeys].n = len;
    lc->slots[at] = (int64_t)lc->nkeys;
    lc->index[lc->rows++] = lc->last = (uint32_t)lc->nkeys++;
    if (lc->nkeys * 2 > lc->cap)
        return lc_rehash(lc);
    return 0;
}

/* n varint-prefixed strings at [p, end) into lc; -2 when they do not fill it exactly. */
static int
lc_add_run(Lc *lc, const char *p, const char *end, uint64_t n)
{
    for (uint64_t j = 0; j < n; j++) {
        uint64_t len;
        if (read_varint(&p, end, &len) < 0 || (uint64_t)(end - p) < len)
            return -2;
        int rc = lc_add(lc, p, (Py_ssize_t)len);
        if (rc < 0)
            return rc;
        p += len;
    }
    return p == end ? 0 : -2;
}

static int
lc_write(Lc *lc, Buf *out)
{
    if (lc->rows != lc->total)
        return -2;
    if (lc->total == 0)
        return 0;
    /* flags: index width, a dictionary in this block (HasAdditionalKeys, NeedUpdateDictionary) */
    uint64_t ix_type = lc->nkeys <= 0x100 ? 0 : lc->nkeys <= 0x10000 ? 1 : 2;
    int rc = put_u64(out, (1 << 9) | (1 << 10) | ix_type);
    rc = rc ? rc : put_u64(out, (uint64_t)lc->nkeys);
    for (size_t e = 0; rc == 0 && e < lc->nkeys; e++)
        rc = put_bytes(out, lc->keys[e].p, lc->keys[e].n);
    rc = rc ? rc : put_u64(out, lc->total);
    int width = 1 << ix_type;
    if (rc == 0 && RESERVE(out, (Py_ssize_t)(lc->total * (uint64_t)width)) < 0)
        rc = -1;
    for (uint64_t r = 0; rc == 0 && r < lc->total; r++) {
        uint32_t v = lc->index[r];
        memcpy(out->p + out->n, &v, (size_t)width); /* little-endian: the low bytes first */
        out->n += width;
    }
    return rc;
}

/* Segment k of column c of blocks [from, to), strings, as LowCardinality(String) data. */
static int
lc_segment(Block *blocks, Py_ssize_t from, Py_ssize_t to, uint64_t c, int k, Buf *out)
{
    uint64_t total = 0;
    for (Py_ssize_t i = from; i < to; i++)
        total += blocks[i].col[c].seg_count[k];
    if (total == 0)
        return 0;
    Lc lc;
    if (lc_init(&lc, total) < 0)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = from; i < to && rc == 0; i++) {
        const Col *col = &blocks[i].col[c];
        rc = lc_add_run(&lc, col->seg[k], col->seg[k] + col->seg_len[k], col->seg_count[k]);
    }
    rc = rc ? rc : lc_write(&lc, out);
    lc_free(&lc);
    return rc;
}

/* The target type of a column (targets: {name: type}) when it turns some of
 * the block's Strings into LowCardinality(String); NULL (no error) otherwise. */
static Ty *
lc_target(PyObject *targets, const Col *col, char *target_kinds, int *nkinds, PyObject **type_bytes)
{
    *type_bytes = NULL;
    if (targets == NULL)
        return NULL;
    PyObject *name = PyBytes_FromStringAndSize(col->name, col->name_len);
    if (name == NULL)
        return NULL;
    PyObject *type = PyDict_GetItemWithError(targets, name);
    Py_DECREF(name);
    if (type == NULL || !PyBytes_Check(type))
        return NULL;
    const char *tp = PyBytes_AS_STRING(type), *tend = tp + PyBytes_GET_SIZE(type);
    Ty *target = ty_parse(&tp, tend);
    const char *bp = col->type, *bend = bp + col->type_len;
    Ty *plain = ty_parse(&bp, bend);
    char kinds[MAX_SEGS + 1];
    int n1 = 0, n2 = 0, lc = 0, ok = target != NULL && plain != NULL && tp == tend && bp == bend;
    if (ok) {
        ty_flatten(target, -1, target_kinds, NULL, NULL, &n1);
        ty_flatten(plain, -1, kinds, NULL, NULL, &n2);
        ok = n1 == n2 && n1 <= MAX_SEGS;
        for (int k = 0; ok && k < n1; k++) {
            if (target_kinds[k] == TY_LC && kinds[k] == TY_STRING)
                lc = 1;
            else if (target_kinds[k] != kinds[k])
                ok = 0;
        }
    }
    ty_free(plain);
    if (!ok || !lc) {
        ty_free(target);
        return NULL;
    }
    *nkinds = n1;
    Py_INCREF(type);
    *type_bytes = type;
    return target;
}

/* A merged column's header: as the blocks have it, or with the table's type
 * when targets turn some of its Strings into LowCardinality(String) (then
 * *lc is 1 and lc_kinds[k] says which segments). */
static int
column_head(const Col *first, PyObject *targets, Buf *out, char *lc_kinds, int *lc)
{
    int nkinds = 0;
    PyObject *type = NULL;
    Ty *target = lc_target(targets, first, lc_kinds, &nkinds, &type);
    *lc = 0;
    if (target == NULL && PyErr_Occurred())
        return -1;
    ty_free(target);
    if (type == NULL)
        return put_raw(out, first->head, first->head_len);
    *lc = 1;
    int rc = put_bytes(out, first->name, first->name_len);
    rc = rc ? rc : put_bytes(out, PyBytes_AS_STRING(type), PyBytes_GET_SIZE(type));
    Py_DECREF(type);
    for (int k = 0; rc == 0 && k < nkinds; k++)
        if (lc_kinds[k] == TY_LC)
            rc = put_u64(out, 1); /* the LowCardinality serialization version, per leaf, up front */
    return rc;
}

static int
block_head(const Block *first, uint64_t rows, Buf *out)
{
    char tmp[10];
    if (put_raw(out, tmp, varint(tmp, first->cols)) < 0 || put_raw(out, tmp, varint(tmp, rows)) < 0)
        return -1;
    return 0;
}

/* Write blocks [from, to) (same header) as one block; targets may turn
 * String columns into the table's LowCardinality(String). */
static int
merge_run(Block *blocks, Py_ssize_t from, Py_ssize_t to, Buf *out, PyObject *targets)
{
    if (to - from == 1 && targets == NULL)
        return put_raw(out, blocks[from].start, blocks[from].end - blocks[from].start);
    uint64_t rows = 0;
    for (Py_ssize_t i = from; i < to; i++)
        rows += blocks[i].rows;
    if (block_head(&blocks[from], rows, out) < 0)
        return -1;
    for (uint64_t c = 0; c < blocks[from].cols; c++) {
        const Col *first = &blocks[from].col[c];
        char kinds[MAX_SEGS + 1];
        int lc;
        if (column_head(first, targets, out, kinds, &lc) < 0)
            return -1;
        for (int k = 0; k < first->nseg; k++) {
            if (lc && kinds[k] == TY_LC) {
                int rc = lc_segment(blocks, from, to, c, k, out);
                if (rc < 0)
                    return rc;
                continue;
            }
            uint64_t base = 0;
            for (Py_ssize_t i = from; i < to; i++) {
                const Col *col = &blocks[i].col[c];
                const char *p = col->seg[k];
                Py_ssize_t n = col->seg_len[k];
                if (RESERVE(out, n) < 0)
                    return -1;
                if (!first->is_off[k] || base == 0)
                    memcpy(out->p + out->n, p, (size_t)n);
                else {
                    for (Py_ssize_t j = 0; j < n; j += 8) {
                        uint64_t off;
                        memcpy(&off, p + j, 8);
                        off += base;
                        memcpy(out->p + out->n + j, &off, 8);
                    }
                }
                out->n += n;
                if (first->is_off[k] && n > 0) {
                    uint64_t last;
                    memcpy(&last, p + n - 8, 8);
                    base += last;
                }
            }
        }
    }
    return 0;
}

/* -- rows in the table's sorting-key order -----------------------------------
 *
 * A MergeTree sorts each inserted block by its sorting key, unless ClickHouse
 * finds it sorted already, and writes every column through that permutation:
 * for otel_traces about half of chDB's insert cost (200k spans: 889 against
 * 407 ms, measured).  The store writer copies every row while merging anyway;
 * given the key (order: ((column name, divisor), ...)) it copies them in key
 * order.  A key that differs from the table's costs time, never rows:
 * ClickHouse then sorts the block itself.
 *
 * Key parts: a String column (compared as ClickHouse compares strings: bytes,
 * then length), or an integer column (Int64, DateTime64(9), UInt64, UInt32),
 * optionally divided (toDateTime(Timestamp) is Timestamp floor-divided by
 * 10^9).  Ties keep their input order.  Text parts with few distinct values
 * become ranks, and parts whose ranges fit in 64 bits together one integer;
 * a key of at most 32 bits is radix-sorted (otel_traces' key on the
 * benchmark's spans: 7 bits; merging 0.70 -> 0.61 us per row).
 */
#define MAX_KEYS 4

/* Every row's key, part by part: an unsigned 64-bit value that orders as the
 * part does, and for text the string itself, compared only when two values
 * tie (the value is its first 8 bytes, big-endian). */
typedef struct {
    int nparts;
    uint64_t *value[MAX_KEYS];
    Key *text[MAX_KEYS]; /* NULL for a number */
} Keys;

static void
keys_free(Keys *keys)
{
    for (int i = 0; i < MAX_KEYS; i++) {
        PyMem_Free(keys->value[i]);
        PyMem_Free(keys->text[i]);
    }
}

/* Two strings as ClickHouse orders them: bytes, then length; the first
 * ``from`` bytes are known to tie. */
static inline int
text_cmp(const Key *x, const Key *y, Py_ssize_t from)
{
    Py_ssize_t n = (x->n < y->n ? x->n : y->n) - from;
    int c = n > 0 ? memcmp(x->p + from, y->p + from, (size_t)n) : 0;
    if (c != 0)
        return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static inline int
row_cmp(const Keys *keys, uint32_t a, uint32_t b)
{
    for (int i = 0; i < keys->nparts; i++) {
        uint64_t x = keys->value[i][a], y = keys->value[i][b];
        if (x != y)
            return x < y ? -1 : 1;
        const Key *t = keys->text[i];
        int c = t != NULL ? text_cmp(&t[a], &t[b], 8) : 0; /* the first 8 bytes tie: the rest, then the length */
        if (c != 0)
            return c;
    }
    return a < b ? -1 : a > b; /* ties keep their order */
}

/* rows[0, n) sorted by row_cmp: a bottom-up merge sort through tmp. */
static uint32_t *
sort_indexes(const Keys *keys, uint32_t *rows, uint32_t *tmp, uint64_t n)
{
    const uint64_t run = 16;
    for (uint64_t lo = 0; lo < n; lo += run) { /* insertion-sorted runs */
        uint64_t hi = lo + run < n ? lo + run : n;
        for (uint64_t i = lo + 1; i < hi; i++) {
            uint32_t v = rows[i];
            uint64_t j = i;
            while (j > lo && row_cmp(keys, rows[j - 1], v) > 0) {
                rows[j] = rows[j - 1];
                j--;
            }
            rows[j] = v;
        }
    }
    for (uint64_t width = run; width < n; width *= 2) {
        for (uint64_t lo = 0; lo < n; lo += 2 * width) {
            uint64_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            uint64_t i = lo, j = mid, k = lo;
            if (mid >= hi || row_cmp(keys, rows[mid - 1], rows[mid]) <= 0) { /* in order already */
                memcpy(tmp + lo, rows + lo, (size_t)(hi - lo) * sizeof(uint32_t));
                continue;
            }
            while (i < mid && j < hi)
                tmp[k++] = row_cmp(keys, rows[j], rows[i]) < 0 ? rows[j++] : rows[i++];
            while (i < mid)
                tmp[k++] = rows[i++];
            while (j < hi)
                tmp[k++] = rows[j++];
        }
        uint32_t *swap = rows;
        rows = tmp;
        tmp = swap;
    }
    return rows;
}

static int
type_is(const Col *c, const char *name)
{
    size_t n = strlen(name);
    return (size_t)c->type_len == n && memcmp(c->type, name, n) == 0;
}

/* Key part `part` of every row of blocks [0, nb) into keys.  0: done, 1: the
 * column cannot be a key (rows stay as they are), -1: error set, -2: malformed. */
static int
key_part(Block *blocks, Py_ssize_t nb, const char *name, Py_ssize_t name_len, int64_t divisor,
         Keys *keys, uint64_t total, int part)
{
    Py_ssize_t c = -1;
    for (uint64_t i = 0; i < blocks[0].cols; i++)
        if (blocks[0].col[i].name_len == name_len && memcmp(blocks[0].col[i].name, name, (size_t)name_len) == 0)
            c = (Py_ssize_t)i;
    if (c < 0)
        return 1;
    const Col *first = &blocks[0].col[c];
    int width = 0, is_signed = 0, text = type_is(first, "String");
    if (text)
        ;
    else if (type_is(first, "Int64") || type_is(first, "DateTime64(9)"))
        width = 8, is_signed = 1;
    else if (type_is(first, "UInt64"))
        width = 8;
    else if (type_is(first, "UInt32"))
        width = 4;
    else
        return 1;
    if (divisor < 0 || (divisor > 0 && !is_signed))
        return 1;
    uint64_t *value = keys->value[part] = PyMem_Malloc((size_t)total * sizeof(uint64_t));
    Key *strings = NULL;
    if (text)
        strings = keys->text[part] = PyMem_Malloc((size_t)total * sizeof(Key));
    if (value == NULL || (text && strings == NULL)) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t r = 0;
    for (Py_ssize_t i = 0; i < nb; i++) {
        const Col *col = &blocks[i].col[c];
        const char *p = col->seg[0], *end = p + col->seg_len[0];
        for (uint64_t j = 0; j < col->seg_count[0]; j++, r++) {
            uint64_t v = 0;
            if (text) {
                uint64_t len;
                if (read_varint(&p, end, &len) < 0 || (uint64_t)(end - p) < len)
                    return -2;
                unsigned char head[8] = {0};
                memcpy(head, p, (size_t)(len < 8 ? len : 8));
                for (int b = 0; b < 8; b++)
                    v = (v << 8) | head[b];
                strings[r].p = p;
                strings[r].n = (Py_ssize_t)len;
                p += len;
            }
            else {
                memcpy(&v, p + j * (uint64_t)width, (size_t)width);
                if (is_signed) {
                    int64_t sv = (int64_t)v;
                    if (divisor > 1)
                        sv = sv / divisor - (sv % divisor < 0); /* floor */
                    v = (uint64_t)sv ^ (UINT64_C(1) << 63); /* signed order as unsigned */
                }
            }
            value[r] = v;
        }
    }
    return 0;
}

typedef struct {
    Key key;
    uint32_t id;
} Ranked;

static int
ranked_cmp(const void *a, const void *b)
{
    return text_cmp(&((const Ranked *)a)->key, &((const Ranked *)b)->key, 0);
}

#define RANK_MAX 4096

/* A text part as dense ranks: equal strings one value, in the order
 * ClickHouse gives the strings (bytes, then length), so its rows compare as
 * integers.  The sorting keys' text columns (service and span names) hold a
 * few distinct values: ranking them is a hash per row and a sort of those
 * few, where comparing them was a memcmp per comparison.  Left as text past
 * RANK_MAX distinct strings or one per four rows. */
static int
rank_text(Keys *keys, int part, uint64_t total)
{
    const Key *t = keys->text[part];
    Lc lc;
    if (lc_init(&lc, total) < 0)
        return -1;
    int rc = 0;
    /* many distinct strings (ids): their first 8 bytes mostly decide already, ranking would cost more */
    size_t most = total / 4 < RANK_MAX ? total / 4 : RANK_MAX;
    for (uint64_t r = 0; r < total && rc == 0; r++)
        if ((rc = lc_add(&lc, t[r].p, t[r].n)) == 0 && lc.nkeys > most)
            rc = -2;
    Ranked *sorted = NULL;
    uint32_t *rank = NULL;
    if (rc == 0) {
        sorted = PyMem_Malloc((lc.nkeys ? lc.nkeys : 1) * sizeof(Ranked));
        rank = PyMem_Malloc((lc.nkeys ? lc.nkeys : 1) * sizeof(uint32_t));
        if (sorted == NULL || rank == NULL) {
            PyErr_NoMemory();
            rc = -1;
        }
    }
    if (rc == 0) {
        for (size_t i = 0; i < lc.nkeys; i++) {
            sorted[i].key = lc.keys[i];
            sorted[i].id = (uint32_t)i;
        }
        qsort(sorted, lc.nkeys, sizeof(Ranked), ranked_cmp);
        for (size_t i = 0; i < lc.nkeys; i++)
            rank[sorted[i].id] = (uint32_t)i;
        uint64_t *value = keys->value[part];
        for (uint64_t r = 0; r < total; r++)
            value[r] = rank[lc.index[r]];
        PyMem_Free(keys->text[part]);
        keys->text[part] = NULL;
    }
    PyMem_Free(sorted);
    PyMem_Free(rank);
    lc_free(&lc);
    return rc == -2 ? 0 : rc; /* too many distinct strings: compared as text */
}

/* All parts as one value when their ranges fit in 64 bits together: each
 * part less its smallest value, shifted over the parts after it.  Returns
 * the bits the value uses, or -1 when the parts stay as they are. */
static int
pack_keys(Keys *keys, uint64_t total)
{
    int bits[MAX_KEYS], sum = 0;
    uint64_t low[MAX_KEYS];
    for (int i = 0; i < keys->nparts; i++) {
        if (keys->text[i] != NULL)
            return -1;
        const uint64_t *v = keys->value[i];
        uint64_t lo = v[0], hi = v[0];
        for (uint64_t r = 1; r < total; r++) {
            lo = v[r] < lo ? v[r] : lo;
            hi = v[r] > hi ? v[r] : hi;
        }
        low[i] = lo;
        bits[i] = hi == lo ? 0 : 64 - __builtin_clzll(hi - lo);
        sum += bits[i];
    }
    if (sum > 64)
        return -1;
    uint64_t *packed = keys->value[0];
    for (uint64_t r = 0; r < total; r++) {
        uint64_t k = 0;
        for (int i = 0; i < keys->nparts; i++)
            k = (bits[i] >= 64 ? 0 : k << bits[i]) | (keys->value[i][r] - low[i]);
        packed[r] = k;
    }
    for (int i = 1; i < keys->nparts; i++) {
        PyMem_Free(keys->value[i]);
        keys->value[i] = NULL;
    }
    keys->nparts = 1;
    return sum;
}

/* rows[0, n) ordered by a key of at most 32 bits: (key << 32 | row) sorted
 * a byte of the key at a time, least significant first.  Each pass is
 * stable, so ties keep their input order.  -1 when out of memory. */
static int
radix_rows(const uint64_t *key, int bits, uint64_t n, uint32_t *rows)
{
    uint64_t *a = PyMem_Malloc((size_t)n * sizeof(uint64_t)), *b = PyMem_Malloc((size_t)n * sizeof(uint64_t));
    if (a == NULL || b == NULL) {
        PyMem_Free(a);
        PyMem_Free(b);
        PyErr_NoMemory();
        return -1;
    }
    for (uint64_t r = 0; r < n; r++)
        a[r] = key[r] << 32 | r;
    for (int shift = 32; shift < 32 + bits; shift += 8) {
        uint64_t count[257] = {0};
        for (uint64_t r = 0; r < n; r++)
            count[((a[r] >> shift) & 0xff) + 1]++;
        for (int d = 0; d < 256; d++)
            count[d + 1] += count[d];
        for (uint64_t r = 0; r < n; r++)
            b[count[(a[r] >> shift) & 0xff]++] = a[r];
        uint64_t *swap = a;
        a = b;
        b = swap;
    }
    for (uint64_t r = 0; r < n; r++)
        rows[r] = (uint32_t)a[r];
    PyMem_Free(a);
    PyMem_Free(b);
    return 0;
}

/* The rows of blocks [0, nb) in key order, in *out (indexes into the rows
 * in block order); 1 when there is nothing to do (no usable key, or sorted
 * already), 0 when *out holds them. */
static int
sort_rows(Block *blocks, Py_ssize_t nb, PyObject *order, uint32_t **out, uint64_t total)
{
    Py_ssize_t nparts = PySequence_Fast_GET_SIZE(order);
    if (nparts == 0 || nparts > MAX_KEYS || total < 2 || total > UINT32_MAX || (uint64_t)nb > UINT32_MAX)
        return 1; /* row and block numbers are kept in 32 bits */
    Keys keys = {0};
    keys.nparts = (int)nparts;
    int rc = 0;
    for (Py_ssize_t i = 0; i < nparts && rc == 0; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(order, i);
        const char *name;
        Py_ssize_t name_len;
        long long divisor;
        if (!PyArg_ParseTuple(item, "y#L", &name, &name_len, &divisor)) {
            rc = -1;
            break;
        }
        rc = key_part(blocks, nb, name, name_len, (int64_t)divisor, &keys, total, (int)i);
    }
    for (int i = 0; i < keys.nparts && rc == 0; i++)
        if (keys.text[i] != NULL)
            rc = rank_text(&keys, i, total);
    int bits = rc == 0 ? pack_keys(&keys, total) : -1;
    if (rc == 0) {
        rc = 1;
        for (uint64_t r = 1; r < total && rc == 1; r++)
            if (row_cmp(&keys, (uint32_t)(r - 1), (uint32_t)r) > 0)
                rc = 0;
    }
    int radix = bits >= 0 && bits <= 32; /* one small key: a radix sort, which needs no tmp */
    uint32_t *rows = NULL, *tmp = NULL;
    if (rc == 0) {
        rows = PyMem_Malloc((size_t)total * sizeof(uint32_t));
        tmp = radix ? NULL : PyMem_Malloc((size_t)total * sizeof(uint32_t));
        if (rows == NULL || (!radix && tmp == NULL)) {
            PyErr_NoMemory();
            rc = -1;
        }
    }
    if (rc == 0 && radix)
        rc = radix_rows(keys.value[0], bits, total, rows);
    else if (rc == 0) {
        for (uint64_t r = 0; r < total; r++)
            rows[r] = (uint32_t)r;
        if (sort_indexes(&keys, rows, tmp, total) == tmp) { /* the sorted rows ended up in tmp */
            uint32_t *swap = rows;
            rows = tmp;
            tmp = swap;
        }
    }
    if (rc == 0) {
        *out = rows;
        rows = NULL;
    }
    PyMem_Free(rows);
    PyMem_Free(tmp);
    keys_free(&keys);
    return rc;
}

/* Every row's place in every segment of column c: for block b and segment k,
 * ele[at(k, b) + r] is the index of row r's first value in the segment and
 * pos[...] its byte offset (r = rows: the segment's end), unless no_pos[k]
 * (strings turned LowCardinality are indexed, not copied: no offsets needed). */
static int
row_places(Block *blocks, Py_ssize_t nb, uint64_t c, const char *kinds, const int *widths, const int *parents,
           const char *no_pos, int nseg, const uint64_t *block_at, uint64_t stride, uint64_t *ele, uint64_t *pos)
{
    for (Py_ssize_t b = 0; b < nb; b++) {
        const Col *col = &blocks[b].col[c];
        uint64_t n = blocks[b].rows;
        for (int k = 0; k < nseg; k++) {
            uint64_t *e = ele + k * stride + block_at[b], *ps = pos + k * stride + block_at[b];
            if (parents[k] < 0)
                for (uint64_t r = 0; r <= n; r++)
                    e[r] = r;
            else {
                const uint64_t *pe = ele + parents[k] * stride + block_at[b];
                const char *off = col->seg[parents[k]];
                uint64_t prev = 0;
                for (uint64_t r = 0; r <= n; r++) {
                    uint64_t v = 0;
                    if (pe[r] > 0)
                        memcpy(&v, off + (pe[r] - 1) * 8, 8);
                    if (v < prev || v > col->seg_count[k])
                        return -2;
                    e[r] = prev = v;
                }
            }
            if (no_pos[k])
                continue;
            if (kinds[k] == TY_STRING) {
                const char *start = col->seg[k], *p = start, *end = start + col->seg_len[k];
                uint64_t at = 0;
                for (uint64_t r = 0; r <= n; r++) {
                    for (; at < e[r]; at++) {
                        uint64_t len;
                        if (read_varint(&p, end, &len) < 0 || (uint64_t)(end - p) < len)
                            return -2;
                        p += len;
                    }
                    ps[r] = (uint64_t)(p - start);
                }
            }
            else {
                uint64_t w = kinds[k] == TY_FIXED ? (uint64_t)widths[k] : 8;
                for (uint64_t r = 0; r <= n; r++)
                    ps[r] = e[r] * w;
            }
        }
    }
    return 0;
}

/* Segment k of column c as LowCardinality(String) data with the rows in
 * sorted order: the dictionary is built in block order (hashing strings
 * where they lie), then the rows' indexes are copied in sorted order and
 * renumbered by first appearance, as a block written in that order has them. */
static int
lc_permuted(Block *blocks, Py_ssize_t nb, uint64_t c, int k, uint64_t count, const uint64_t *e,
            const uint32_t *src_block, const uint64_t *src_row, uint64_t total, Buf *out)
{
    Lc lc;
    if (lc_init(&lc, count) < 0)
        return -1;
    int rc = 0;
    uint64_t *first = PyMem_Malloc((size_t)nb * sizeof(uint64_t)); /* block b's first value in lc.index */
    uint32_t *renumber = NULL, *index = PyMem_Malloc((size_t)count * sizeof(uint32_t));
    Key *keys = NULL;
    if (first == NULL || index == NULL) {
        PyErr_NoMemory();
        rc = -1;
    }
    for (Py_ssize_t b = 0; b < nb && rc == 0; b++) {
        const Col *col = &blocks[b].col[c];
        first[b] = lc.rows;
        rc = lc_add_run(&lc, col->seg[k], col->seg[k] + col->seg_len[k], col->seg_count[k]);
    }
    if (rc == 0) {
        renumber = PyMem_Malloc((lc.nkeys ? lc.nkeys : 1) * sizeof(uint32_t));
        keys = PyMem_Malloc((lc.nkeys ? lc.nkeys : 1) * sizeof(Key));
        if (renumber == NULL || keys == NULL) {
            PyErr_NoMemory();
            rc = -1;
        }
    }
    if (rc == 0) {
        memset(renumber, 0xff, lc.nkeys * sizeof(uint32_t));
        uint64_t x = 0;
        uint32_t next = 0;
        for (uint64_t i = 0; i < total; i++) {
            uint64_t r = src_row[i];
            const uint32_t *from = lc.index + first[src_block[i]]; /* e[] counts from the block's start */
            for (uint64_t v = e[r]; v < e[r + 1]; v++) {
                uint32_t id = from[v];
                if (renumber[id] == UINT32_MAX) {
                    keys[next] = lc.keys[id];
                    renumber[id] = next++;
                }
                index[x++] = renumber[id];
            }
        }
        PyMem_Free(lc.keys);
        PyMem_Free(lc.index);
        lc.keys = keys;
        lc.index = index;
        lc.keycap = lc.nkeys;
        keys = NULL;
        index = NULL;
        rc = lc_write(&lc, out);
    }
    PyMem_Free(first);
    PyMem_Free(renumber);
    PyMem_Free(index);
    PyMem_Free(keys);
    lc_free(&lc);
    return rc;
}

/* Write blocks [0, nb) (same header) as one block with the rows in the order
 * of rows[] (from sort_rows); targets as for merge_run. */
static int
merge_sorted(Block *blocks, Py_ssize_t nb, Buf *out, PyObject *targets, const uint32_t *rows, uint64_t total)
{
    int rc = 0;
    uint64_t stride = total + (uint64_t)nb;
    uint64_t *block_at = PyMem_Malloc((size_t)nb * sizeof(uint64_t));
    uint32_t *src_block = PyMem_Malloc((size_t)total * sizeof(uint32_t));
    uint64_t *src_row = PyMem_Malloc((size_t)total * sizeof(uint64_t)); /* row r of block b: block_at[b] + r */
    uint64_t *ele = PyMem_Malloc((size_t)(MAX_SEGS * stride) * sizeof(uint64_t));
    uint64_t *pos = PyMem_Malloc((size_t)(MAX_SEGS * stride) * sizeof(uint64_t));
    if (block_at == NULL || src_block == NULL || src_row == NULL || ele == NULL || pos == NULL) {
        PyErr_NoMemory();
        rc = -1;
        goto done;
    }
    uint64_t at = 0, g = 0;
    uint32_t *block_of = (uint32_t *)PyMem_Malloc((size_t)total * sizeof(uint32_t));
    if (block_of == NULL) {
        PyErr_NoMemory();
        rc = -1;
        goto done;
    }
    for (Py_ssize_t b = 0; b < nb; b++) {
        block_at[b] = at;
        for (uint64_t r = 0; r < blocks[b].rows; r++)
            block_of[g++] = (uint32_t)b;
        at += blocks[b].rows + 1;
    }
    for (uint64_t i = 0; i < total; i++) {
        uint64_t row = rows[i];
        uint32_t b = block_of[row];
        src_block[i] = b;
        src_row[i] = block_at[b] + (row - (block_at[b] - b)); /* block_at[b] - b: rows before block b */
    }
    PyMem_Free(block_of);
    rc = block_head(&blocks[0], total, out);
    for (uint64_t c = 0; rc == 0 && c < blocks[0].cols; c++) {
        const Col *first = &blocks[0].col[c];
        char lc_kinds[MAX_SEGS + 1], kinds[MAX_SEGS + 1];
        int widths[MAX_SEGS + 1], parents[MAX_SEGS + 1], nseg = 0, lc;
        const char *tp = first->type, *tend = tp + first->type_len;
        Ty *t = ty_parse(&tp, tend);
        if (t == NULL) {
            rc = -2;
            break;
        }
        ty_flatten(t, -1, kinds, widths, parents, &nseg);
        ty_free(t);
        if (nseg != first->nseg) {
            rc = -2;
            break;
        }
        if ((rc = column_head(first, targets, out, lc_kinds, &lc)) < 0)
            break;
        char no_pos[MAX_SEGS + 1];
        for (int k = 0; k < nseg; k++)
            no_pos[k] = lc && lc_kinds[k] == TY_LC;
        if ((rc = row_places(blocks, nb, c, kinds, widths, parents, no_pos, nseg, block_at, stride, ele, pos)) < 0)
            break;
        for (int k = 0; rc == 0 && k < nseg; k++) {
            const uint64_t *e = ele + k * stride, *ps = pos + k * stride;
            uint64_t count = 0; /* the segment's values, and its bytes (the same whatever the order) */
            Py_ssize_t bytes = 0;
            for (Py_ssize_t b = 0; b < nb; b++) {
                count += blocks[b].col[c].seg_count[k];
                bytes += blocks[b].col[c].seg_len[k];
            }
            if (lc && lc_kinds[k] == TY_LC) {
                if (count > 0)
                    rc = lc_permuted(blocks, nb, c, k, count, e, src_block, src_row, total, out);
                continue;
            }
            if (RESERVE(out, bytes) < 0) {
                rc = -1;
                break;
            }
            if (kinds[k] == TY_ARRAY || kinds[k] == TY_MAP) {
                const uint64_t *ce = ele + (k + 1) * stride; /* the first child's places */
                uint64_t base = 0;
                for (uint64_t i = 0; i < total; i++) {
                    const char *seg = blocks[src_block[i]].col[c].seg[k];
                    uint64_t r = src_row[i], sub = ce[r];
                    for (uint64_t x = e[r]; x < e[r + 1]; x++) {
                        uint64_t v;
                        memcpy(&v, seg + x * 8, 8);
                        v = v - sub + base;
                        memcpy(out->p + out->n, &v, 8);
                        out->n += 8;
                    }
                    base += ce[r + 1] - sub;
                }
            }
            else {
                for (uint64_t i = 0; i < total; i++) {
                    const char *seg = blocks[src_block[i]].col[c].seg[k];
                    uint64_t r = src_row[i], n = ps[r + 1] - ps[r];
                    memcpy(out->p + out->n, seg + ps[r], (size_t)n);
                    out->n += (Py_ssize_t)n;
                }
            }
        }
    }
done:
    PyMem_Free(block_at);
    PyMem_Free(src_block);
    PyMem_Free(src_row);
    PyMem_Free(ele);
    PyMem_Free(pos);
    return rc;
}

static PyObject *
merge_blocks(PyObject *self, PyObject *args)
{
    PyObject *arg, *targets = Py_None, *into = Py_None, *order_arg = Py_None, *order = NULL;
    if (!PyArg_ParseTuple(args, "O|OOO", &arg, &targets, &into, &order_arg))
        return NULL;
    if (targets == Py_None)
        targets = NULL;
    else if (!PyDict_Check(targets)) {
        PyErr_SetString(PyExc_TypeError, "targets must be a dict {column name bytes: table type bytes}");
        return NULL;
    }
    if (order_arg != Py_None
        && (order = PySequence_Fast(order_arg, "order must be a sequence of (column name bytes, divisor)")) == NULL)
        return NULL;
    Py_buffer view, dest;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        Py_XDECREF(order);
        return NULL;
    }
    if (into != Py_None && PyObject_GetBuffer(into, &dest, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&view);
        Py_XDECREF(order);
        return NULL;
    }
    const char *p = view.buf, *end = p + view.len;
    Block *blocks = NULL;
    Py_ssize_t n = 0, cap = 0;
    Buf out = {0};
    int rc = 0;
    while (p < end) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            Block *b = PyMem_Realloc(blocks, (size_t)cap * sizeof(Block));
            if (b == NULL) {
                PyErr_NoMemory();
                rc = -1;
                break;
            }
            blocks = b;
        }
        rc = block_scan(p, end, &blocks[n]);
        if (rc != 0) {
            PyMem_Free(blocks[n].col);
            break;
        }
        p = blocks[n++].end;
    }
    int tail = rc == 1; /* from p on: a type merging does not know, passed through */
    if (tail)
        rc = 0;
    /* Written straight into the result: merging only drops block headers, so
     * the output never outgrows the input (checked: out has no room to grow). */
    PyObject *result = NULL;
    if (rc == 0 && into != Py_None) { /* the caller's memory, reused from call to call: no fresh pages */
        out.p = dest.buf;
        out.cap = dest.len;
        out.borrowed = 1;
    }
    else if (rc == 0 && targets != NULL)
        rc = buf_grow(&out, view.len + 16); /* LowCardinality data can outgrow the input: a growable buffer */
    else if (rc == 0) {
        result = PyBytes_FromStringAndSize(NULL, view.len + 16);
        if (result == NULL)
            rc = -1;
        else {
            out.p = PyBytes_AS_STRING(result);
            out.cap = view.len + 16;
            out.borrowed = 1;
        }
    }
    Py_ssize_t i = 0;
    if (rc == 0 && order != NULL && n > 0 && !tail) { /* one table's rows: in key order when they share a header */
        Py_ssize_t j = 1;
        while (j < n && same_header(&blocks[0], &blocks[j]))
            j++;
        uint64_t total = 0;
        for (Py_ssize_t k = 0; k < n; k++)
            total += blocks[k].rows;
        uint32_t *rows = NULL;
        int sorted = j == n ? sort_rows(blocks, n, order, &rows, total) : 1;
        if (sorted == 0) {
            rc = merge_sorted(blocks, n, &out, targets, rows, total);
            i = n;
        }
        else if (sorted < 0)
            rc = sorted;
        PyMem_Free(rows);
    }
    while (rc == 0 && i < n) {
        Py_ssize_t j = i + 1;
        while (j < n && same_header(&blocks[i], &blocks[j]))
            j++;
        rc = merge_run(blocks, i, j, &out, targets);
        i = j;
    }
    if (rc == 0 && tail)
        rc = put_raw(&out, p, end - p);
    for (Py_ssize_t k = 0; k < n; k++)
        PyMem_Free(blocks[k].col);
    PyMem_Free(blocks);
    if (rc == 0 && into != Py_None)
        result = PyLong_FromSsize_t(out.n);
    else if (rc == 0 && targets != NULL) {
        result = PyBytes_FromStringAndSize(out.p, out.n);
        PyMem_Free(out.p);
    }
    else if (rc == 0)
        rc = _PyBytes_Resize(&result, out.n);
    else {
        Py_CLEAR(result);
        if (!out.borrowed)
            PyMem_Free(out.p);
        if (rc == -2 && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "malformed Native data");
    }
    PyBuffer_Release(&view);
    if (into != Py_None)
        PyBuffer_Release(&dest);
    Py_XDECREF(order);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_spans", encode_spans, METH_VARARGS,
     "encode_spans(spans, max_value_chars, trace_header, event_header, text, escape, resource,\n"
     "             readable_type, ctx_type) -> (traces, n, events, n_events, truncated, escaped)\n\n"
     "SDK spans as ClickHouse Native blocks (None for a table without rows)."},
    {"merge_blocks", merge_blocks, METH_VARARGS,
     "merge_blocks(data, targets=None, into=None, order=None) -> bytes, or the length written into `into`\n\n"
     "Native data (a sequence of blocks) with consecutive blocks of the same header merged into one;\n"
     "blocks of types it does not know pass through unchanged.  Same rows, fewer blocks.  targets\n"
     "({column name: table type}, bytes) writes the String columns the table declares\n"
     "LowCardinality(String) as LowCardinality, one dictionary per merged block.  into (a writable\n"
     "buffer) receives the result instead of new bytes; BufferError when it is too small.  order\n"
     "(((column name bytes, divisor), ...), up to 4) writes the rows in that key order when the\n"
     "data is one run of blocks of one header (ties keep their order; a key of unknown columns or\n"
     "types leaves the rows as they are)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chnative", NULL, -1, methods};

#define INTERN(var, text) \
    do { if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL; } while (0)

PyMODINIT_FUNC
PyInit__chnative(void)
{
    INTERN(s_dict, "_dict");
    INTERN(s_items, "items");
    INTERN(s_context, "context");
    INTERN(s_parent, "parent");
    INTERN(s_start_time, "start_time");
    INTERN(s_end_time, "end_time");
    INTERN(s_resource, "resource");
    INTERN(s_scope, "instrumentation_scope");
    INTERN(s_status, "status");
    INTERN(s_name, "name");
    INTERN(s_kind, "kind");
    INTERN(s_attributes, "attributes");
    INTERN(s_events, "events");
    INTERN(s_links, "links");
    INTERN(s_trace_id, "trace_id");
    INTERN(s_span_id, "span_id");
    INTERN(s_trace_state, "trace_state");
    INTERN(s_to_header, "to_header");
    INTERN(s_value_, "_value_");
    INTERN(s_status_code, "status_code");
    INTERN(s_description, "description");
    INTERN(s_version, "version");
    INTERN(s_timestamp, "timestamp");
    INTERN(p_context, "_context");
    INTERN(p_parent, "_parent");
    INTERN(p_start_time, "_start_time");
    INTERN(p_end_time, "_end_time");
    INTERN(p_resource, "_resource");
    INTERN(p_scope, "_instrumentation_scope");
    INTERN(p_status, "_status");
    INTERN(p_name, "_name");
    INTERN(p_kind, "_kind");
    INTERN(p_attributes, "_attributes");
    INTERN(p_events, "_events");
    INTERN(p_links, "_links");
    INTERN(p_status_code, "_status_code");
    INTERN(p_description, "_description");
    INTERN(p_dq, "_dq");
    return PyModule_Create(&module);
}
