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
 * rebuilt anyway when the store writer merges batches (merge.c,
 * which writes the real LowCardinality layout: UInt64 version 1 ahead of the
 * column, then flags, dictionary keys, row count and indexes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "scope_buf.h"
#include "sdk_fields.h"
#include "chnative.h"

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

static PyObject *s_items;

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
        PyObject *d = sdk_plain_dict(m); /* a BoundedAttributes' dict */
        if (d != NULL) {
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
    int rc = put_raw(&out, tmp, varint_write(tmp, (uint64_t)ncols));
    rc = rc ? rc : put_raw(&out, tmp, varint_write(tmp, (uint64_t)rows));
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

static PyObject *s_name, *s_to_header, *s_value_, *s_version;

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

/* state.to_header() if state else "" */
static int
trace_state_text(Enc *e, PyObject *state, Str *s)
{
    str_static(s, "");
    if (state == Py_None)
        return 0;
    int truth = -2;
    PyObject *d = SDK_IS(state, SDK_T_TRACE_STATE) ? sdk_plain_dict(state) : NULL; /* as long as its dict */
    if (d != NULL) {
        truth = PyDict_GET_SIZE(d) > 0;
        Py_DECREF(d);
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
    if (SDK_IS(o, SDK_T_LIST)) { /* BoundedList: its deque, as its __iter__ lists it */
        PyObject *dq = sdk_items(o);
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

PyObject *
chn_encode_spans(PyObject *self, PyObject *args)
{
    PyObject *spans, *trace_header, *event_header;
    Enc e = {0};
    if (!PyArg_ParseTuple(args, "OnOOOOO", &spans, &e.max_chars, &trace_header, &event_header, &e.text,
                          &e.escape, &e.resource))
        return NULL;
    if (sdk_types_ready() < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(spans, "spans must be a sequence");
    if (seq == NULL)
        return NULL;
    State st;
    memset(&st, 0, sizeof st);
    PyObject *result = NULL;
    PyObject *span = NULL, *ctx = NULL, *parent = NULL, *o = NULL, *events = NULL, *links = NULL;
    PyObject *f[SDK_SPAN_N] = {NULL}; /* the span's fields (sdk_fields.h) */
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
        int64_t start = 0, end;
        if (sdk_span_read(span, f) < 0)
            FAIL;

        /* ids */
        ctx = Py_NewRef(f[SDK_CONTEXT]);
        o = sdk_context_item(ctx, 0);
        if (o == NULL || hex_id(&e, o, tid_buf, 16, &tid) < 0)
            FAIL;
        DROP(o);
        o = sdk_context_item(ctx, 1);
        if (o == NULL || hex_id(&e, o, sid_buf, 8, &sid) < 0)
            FAIL;
        DROP(o);
        parent = Py_NewRef(f[SDK_PARENT]);
        if (parent == Py_None)
            str_static(&pid, "");
        else {
            o = sdk_context_item(parent, 1);
            if (o == NULL || hex_id(&e, o, pid_buf, 8, &pid) < 0)
                FAIL;
            DROP(o);
        }
        DROP(parent);
        o = sdk_context_item(ctx, 4);
        if (o == NULL || trace_state_text(&e, o, &state) < 0)
            FAIL;
        DROP(o);
        DROP(ctx);

        /* times: start = span.start_time or 0; end = span.end_time or start */
        o = Py_NewRef(f[SDK_START_TIME]);
        int truth = PyObject_IsTrue(o);
        if (truth < 0 || (truth && as_i64(o, &start) < 0))
            FAIL;
        DROP(o);
        end = start;
        o = Py_NewRef(f[SDK_END_TIME]);
        truth = PyObject_IsTrue(o);
        if (truth < 0 || (truth && as_i64(o, &end) < 0))
            FAIL;
        DROP(o);

        /* resource, scope */
        o = Py_NewRef(f[SDK_RESOURCE]);
        if (o != st.res_obj)
            CHK(set_resource(&e, &st, o));
        DROP(o);
        o = Py_NewRef(f[SDK_SCOPE]);
        if (o != st.scope_obj)
            CHK(set_scope(&e, &st, o));
        DROP(o);

        /* attributes (None: a span built without any) */
        pairs_reset(&st.attrs);
        o = Py_NewRef(f[SDK_ATTRIBUTES]);
        CHK(convert_map(&e, &st.attrs, o));
        DROP(o);

        /* name, kind, status */
        o = Py_NewRef(f[SDK_NAME]);
        if (str_set(&e, &name, o) < 0)
            FAIL;
        DROP(o);
        o = Py_NewRef(f[SDK_KIND]);
        Py_ssize_t kind = enum_index(o, 5);
        DROP(o);
        if (kind == -2)
            FAIL;
        o = Py_NewRef(f[SDK_STATUS]);
        PyObject *st_f[2];
        if (SDK_READ(o, SDK_T_STATUS, SDK_STATUS_FIELDS, st_f) < 0)
            FAIL;
        PyObject *code = st_f[SDK_ST_CODE], *desc = st_f[SDK_ST_DESCRIPTION];
        Py_ssize_t status = enum_index(code, 3);
        Py_DECREF(code);
        if (status == -2) {
            Py_DECREF(desc);
            FAIL;
        }
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

        /* events */
        pairs_reset(&st.evattrs);
        o = Py_NewRef(f[SDK_EVENTS]);
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
            PyObject *ev_f[3];
            if (SDK_READ(ev, SDK_T_EVENT, SDK_EVENT_FIELDS, ev_f) < 0)
                FAIL;
            PyObject *ev_ts = ev_f[SDK_EV_TIMESTAMP], *ev_attrs = ev_f[SDK_EV_ATTRIBUTES];
            o = ev_f[SDK_EV_NAME];
            rc = as_i64(ev_ts, &x->ts);
            Py_DECREF(ev_ts);
            if (rc < 0) {
                Py_DECREF(ev_attrs);
                FAIL;
            }
            if (PyUnicode_Check(o))
                for (int k = 0; k < N_EVENT_SPECS; k++)
                    if (PyUnicode_CompareWithASCIIString(o, EVENT_SPECS[k][0]) == 0) {
                        x->spec = k;
                        break;
                    }
            rc = str_set(&e, &x->name, o);
            DROP(o);
            o = ev_attrs;
            if (rc < 0 || convert_map(&e, &st.evattrs, o) < 0)
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
        o = Py_NewRef(f[SDK_LINKS]);
        Py_ssize_t nln;
        links = seq_items(&e, o, &nln, &err);
        DROP(o);
        if (err)
            FAIL;
        for (Py_ssize_t j = 0; j < nln; j++) {
            PyObject *ln = PySequence_Fast_GET_ITEM(links, j);
            Str lt = {0}, ls = {0};
            PyObject *ln_f[2];
            if (SDK_READ(ln, SDK_T_LINK, SDK_LINK_FIELDS, ln_f) < 0)
                FAIL;
            PyObject *lctx = ln_f[SDK_LN_CONTEXT], *ln_attrs = ln_f[SDK_LN_ATTRIBUTES];
            o = sdk_context_item(lctx, 0);
            rc = o == NULL ? -1 : hex_id(&e, o, lt_buf, 16, &lt);
            DROP(o);
            if (rc == 0) {
                o = sdk_context_item(lctx, 1);
                rc = o == NULL ? -1 : hex_id(&e, o, ls_buf, 8, &ls);
                DROP(o);
            }
            if (rc == 0) {
                o = sdk_context_item(lctx, 4);
                rc = o == NULL ? -1 : trace_state_text(&e, o, &lstate);
                DROP(o);
            }
            Py_DECREF(lctx);
            o = ln_attrs; /* dropped below, or on the error path */
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
            if (convert_map(&e, &st.lnattrs, o) < 0)
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
        for (int k = 0; k < SDK_SPAN_N; k++)
            Py_CLEAR(f[k]);
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
    for (int k = 0; k < SDK_SPAN_N; k++)
        Py_XDECREF(f[k]);
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


#define INTERN(var, text) \
    do { if ((var = PyUnicode_InternFromString(text)) == NULL) return -1; } while (0)

int
chn_encode_init(void)
{
    if (sdk_fields_init() < 0)
        return -1;
    INTERN(s_items, "items");
    INTERN(s_name, "name");
    INTERN(s_to_header, "to_header");
    INTERN(s_value_, "_value_");
    INTERN(s_version, "version");
    return 0;
}
