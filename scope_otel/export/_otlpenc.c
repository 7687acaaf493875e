/* OTLP trace encoder: SDK ReadableSpans -> serialized ExportTraceServiceRequest.
 *
 * The C twin of
 *     opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans).SerializeToString()
 * writing protobuf wire format straight into one buffer instead of building a
 * tree of Python message objects.  Same grouping (resource, then scope, in
 * first-seen order, keys compared with == like the stock defaultdicts), same
 * AnyValue mapping (None, bool, str, int, float, bytes, Sequence -> array,
 * Mapping -> kvlist with str() keys, anything else dropped), same field
 * presence, same errors: an attribute that cannot be encoded is dropped and
 * reported through the ``on_drop(key, exc)`` callback (the stock encoder logs
 * it); anything else that the stock encoder would raise on (a span name with a
 * lone surrogate, an id that does not fit) raises here too.
 *
 * Fields are written in field-number order, as upb does, so the output is
 * byte-identical to the stock encoder's for the same spans.
 *
 * ``setup(config)`` hands in the enum maps and the on_drop callback once
 * (scope_otel.export.otlp does it).  The SDK's objects are read through
 * scope_otel/_c/sdk_fields.h, the one reader of their private fields.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "scope_buf.h"
#include "sdk_fields.h"

#if PY_VERSION_HEX < 0x030C0000
static PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL && v != NULL)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}
#endif

/* ---- configuration (set once by setup()) ---------------------------------- */

static PyObject *ABC_Sequence, *ABC_Mapping;
static PyObject *KindMap, *StatusCodes, *OnDrop;

#define MAX_ENUM 8
static PyObject *kind_keys[MAX_ENUM];
static long kind_vals[MAX_ENUM];
static int n_kinds;
static PyObject *code_keys[MAX_ENUM];
static long code_vals[MAX_ENUM];
static int n_codes;

/* attribute names */
static PyObject *s_name, *s_attributes, *s_dropped, *s_dropped_attributes, *s_dropped_events,
    *s_dropped_links, *s_value, *s_items, *s_version, *s_schema_url, *s_to_bytes, *s_empty,
    *s_comma, *s_length, *s_byteorder, *s_big, *s_signed;

/* ---- output buffer: Buf, RESERVE, varint_write/varint_size (scope_otel/_c) ---- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* after RESERVE: v as a varint at the end of b */
static inline void
varint_(Buf *b, uint64_t v)
{
    b->n += varint_write(b->p + b->n, v);
}

static int
put_varint_field(Buf *b, uint32_t field, uint64_t v)
{
    if (RESERVE(b, 20) < 0)
        return -1;
    varint_(b, ((uint64_t)field << 3) | WT_VARINT);
    varint_(b, v);
    return 0;
}

/* a fixed64 (WT_I64, 8 bytes) or fixed32 (WT_I32, 4 bytes) field, little-endian */
static int
put_fixed_field(Buf *b, uint32_t field, uint64_t v, int wire_type)
{
    int size = wire_type == WT_I64 ? 8 : 4;
    if (RESERVE(b, 10 + size) < 0)
        return -1;
    varint_(b, ((uint64_t)field << 3) | (uint64_t)wire_type);
    for (int i = 0; i < size; i++)
        b->p[b->n++] = (char)(v >> (8 * i));
    return 0;
}

#define put_fixed64_field(b, field, v) put_fixed_field((b), (field), (v), WT_I64)
#define put_fixed32_field(b, field, v) put_fixed_field((b), (field), (uint64_t)(uint32_t)(v), WT_I32)

static int
put_bytes_field(Buf *b, uint32_t field, const char *s, Py_ssize_t n)
{
    if (RESERVE(b, 20 + n) < 0)
        return -1;
    varint_(b, ((uint64_t)field << 3) | WT_LEN);
    varint_(b, (uint64_t)n);
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}

/* A length-delimited field whose size is known only afterwards: write the tag,
 * leave ``reserve`` bytes for the length, and fix it up in end_len (moving the
 * content if the length needs another number of bytes).  Returns the offset of
 * the length slot, or -1. */
static Py_ssize_t
begin_len(Buf *b, uint32_t field, int reserve)
{
    if (RESERVE(b, 10 + reserve) < 0)
        return -1;
    varint_(b, ((uint64_t)field << 3) | WT_LEN);
    Py_ssize_t at = b->n;
    b->n += reserve;
    return at;
}

static int
end_len(Buf *b, Py_ssize_t at, int reserve)
{
    Py_ssize_t n = b->n - at - reserve;
    int need = varint_size((uint64_t)n);
    if (need != reserve) {
        if (RESERVE(b, need > reserve ? need - reserve : 0) < 0)
            return -1;
        memmove(b->p + at + need, b->p + at + reserve, (size_t)n);
        b->n += need - reserve;
    }
    uint64_t v = (uint64_t)n;
    char *q = b->p + at;
    while (v >= 0x80) {
        *q++ = (char)(v | 0x80);
        v >>= 7;
    }
    *q = (char)v;
    return 0;
}

/* ---- scalar conversions with upb's rules -------------------------------------- */

/* A string field as upb takes it: None leaves it unset, str is written as
 * UTF-8 (lone surrogates raise UnicodeEncodeError), bytes must be valid UTF-8.
 * ``always`` writes an empty string too (oneof members have presence). */
static int
put_str_field(Buf *b, uint32_t field, PyObject *o, int always)
{
    const char *s;
    Py_ssize_t n;
    if (o == Py_None)
        return 0;
    if (PyUnicode_Check(o)) {
        s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL)
            return -1;
    }
    else if (PyBytes_Check(o)) {
        s = PyBytes_AS_STRING(o);
        n = PyBytes_GET_SIZE(o);
        PyObject *check = PyUnicode_DecodeUTF8(s, n, "strict");
        if (check == NULL)
            return -1;
        Py_DECREF(check);
    }
    else {
        PyErr_Format(PyExc_TypeError, "expected str for a protobuf string field, got %.200s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (n == 0 && !always)
        return 0;
    return put_bytes_field(b, field, s, n);
}

/* A non-negative int below 2**64 as uint64 without the generic byte-array
 * conversion PyLong_As(Unsigned)LongLong use on multi-digit ints in 3.11.
 * Returns 1 and sets *out, or 0 (no error set) when v is negative or too big. */
static int
u64_of(PyObject *v, uint64_t *out)
{
    if (_PyLong_Sign(v) < 0)
        return 0;
    size_t bits = _PyLong_NumBits(v);
    if (bits == (size_t)-1) {
        PyErr_Clear();
        return 0;
    }
    if (bits > 64)
        return 0;
    *out = (uint64_t)PyLong_AsUnsignedLongLongMask(v);
    return 1;
}

/* An unsigned integer field (uint32, fixed32/64): None leaves it unset. */
static int
get_unsigned(PyObject *o, uint64_t max, uint64_t *out, int *present)
{
    *present = 0;
    if (o == Py_None)
        return 0;
    if (PyBool_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "Expected an int, got a boolean.");
        return -1;
    }
    if (PyLong_CheckExact(o)) {
        if (u64_of(o, out)) {
            if (*out > max)
                goto range_o;
            *present = 1;
            return 0;
        }
        /* negative or >= 2**64: the general path below reports it */
    }
    PyObject *i = PyNumber_Index(o);
    if (i == NULL)
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    uint64_t u;
    if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(i);
        return -1;
    }
    if (overflow > 0) {
        u = PyLong_AsUnsignedLongLong(i);
        if (u == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto range;
        }
    }
    else if (overflow < 0 || v < 0)
        goto range;
    else
        u = (uint64_t)v;
    if (u > max)
        goto range;
    Py_DECREF(i);
    *out = u;
    *present = 1;
    return 0;
range:
    PyErr_Format(PyExc_ValueError, "Value out of range: %R", i);
    Py_DECREF(i);
    return -1;
range_o:
    PyErr_Format(PyExc_ValueError, "Value out of range: %R", o);
    return -1;
}

static int
put_unsigned_field(Buf *b, uint32_t field, PyObject *o, uint64_t max, int wire)
{
    uint64_t v;
    int present;
    if (get_unsigned(o, max, &v, &present) < 0)
        return -1;
    if (!present || v == 0)
        return 0;
    if (wire == WT_I64)
        return put_fixed64_field(b, field, v);
    if (wire == WT_I32)
        return put_fixed32_field(b, field, (uint32_t)v);
    return put_varint_field(b, field, v);
}

/* An open enum (int32) value. */
static int
put_enum_field(Buf *b, uint32_t field, PyObject *o)
{
    if (o == Py_None)
        return 0;
    if (PyBool_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "Expected an int, got a boolean.");
        return -1;
    }
    PyObject *i = PyNumber_Index(o);
    if (i == NULL)
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(i);
        return -1;
    }
    if (overflow || v < INT32_MIN || v > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Value out of range: %R", i);
        Py_DECREF(i);
        return -1;
    }
    Py_DECREF(i);
    if (v == 0)
        return 0;
    return put_varint_field(b, field, (uint64_t)(int64_t)v);
}

/* trace and span ids: ``id.to_bytes(n, "big", signed=False)``. */
static int
put_id_field(Buf *b, uint32_t field, PyObject *id, Py_ssize_t nbytes)
{
    unsigned char tmp[16];
    uint64_t u;
    if (nbytes == 8 && PyLong_Check(id) && u64_of(id, &u)) {
        for (int i = 0; i < 8; i++)
            tmp[i] = (unsigned char)(u >> (56 - 8 * i));
        return put_bytes_field(b, field, (const char *)tmp, 8);
    }
    if (PyLong_Check(id)) {
#if PY_VERSION_HEX >= 0x030D0000
        if (_PyLong_AsByteArray((PyLongObject *)id, tmp, (size_t)nbytes, 0, 0, 1) < 0)
#else
        if (_PyLong_AsByteArray((PyLongObject *)id, tmp, (size_t)nbytes, 0, 0) < 0)
#endif
            return -1;
        return put_bytes_field(b, field, (const char *)tmp, nbytes);
    }
    /* not an int: do what the stock encoder does, literally */
    PyObject *meth = PyObject_GetAttr(id, s_to_bytes);
    if (meth == NULL)
        return -1;
    PyObject *args = PyTuple_New(0), *kw = Py_BuildValue("{OnOOOO}", s_length, nbytes, s_byteorder, s_big,
                                                      s_signed, Py_False);
    PyObject *r = (args && kw) ? PyObject_Call(meth, args, kw) : NULL;
    Py_DECREF(meth);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    if (r == NULL)
        return -1;
    if (!PyBytes_Check(r)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, %.200s found", Py_TYPE(r)->tp_name);
        Py_DECREF(r);
        return -1;
    }
    int rc = PyBytes_GET_SIZE(r) ? put_bytes_field(b, field, PyBytes_AS_STRING(r), PyBytes_GET_SIZE(r)) : 0;
    Py_DECREF(r);
    return rc;
}

/* ---- small object helpers --------------------------------------------------------- */

/* ``obj.dropped`` if obj is a BoundedAttributes / BoundedList (sdk_type ``t``), else 0. */
static PyObject *
dropped_of(PyObject *obj, int t)
{
    if (SDK_IS(obj, t))
        return sdk_iattr(obj, s_dropped);
    int r = PyObject_IsInstance(obj, (PyObject *)sdk_type[t]);
    if (r < 0)
        return NULL;
    if (r)
        return PyObject_GetAttr(obj, s_dropped);
    return PyLong_FromLong(0);
}

/* ---- AnyValue ------------------------------------------------------------------------ */

static int enc_anyvalue(Buf *b, PyObject *v, int level);

/* Decoders limit message nesting (upb and protobuf C++: 100 levels of
 * sub-messages below the request, which is level 1 here); a request nested
 * deeper is rejected whole.  An attribute value that would go deeper is
 * dropped instead: the stock encoder drops most of these too (upb refuses to
 * copy the sub-message), though at some depths it fails the batch or sends a
 * request that does not parse. */
#define MAX_DEPTH 101

static int
check_depth(int level)
{
    if (level <= MAX_DEPTH)
        return 0;
    PyErr_Format(PyExc_ValueError, "attribute value nested deeper than the %d message levels "
                 "protobuf decoders accept", MAX_DEPTH - 1);
    return -1;
}

/* a KeyValue body: key (string field), value (always-present AnyValue) */
static int
enc_keyvalue(Buf *b, PyObject *key, PyObject *value, int level)
{
    if (check_depth(level) < 0 || put_str_field(b, 1, key, 0) < 0)
        return -1;
    Py_ssize_t at = begin_len(b, 2, 1);
    if (at < 0 || enc_anyvalue(b, value, level + 1) < 0)
        return -1;
    return end_len(b, at, 1);
}

/* unpack a 2-item (key, value) pair as ``for k, v in items`` does */
static int
unpack_pair(PyObject *item, PyObject **k, PyObject **v)
{
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
        *k = Py_NewRef(PyTuple_GET_ITEM(item, 0));
        *v = Py_NewRef(PyTuple_GET_ITEM(item, 1));
        return 0;
    }
    PyObject *seq = PySequence_Fast(item, "cannot unpack non-iterable object");
    if (seq == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) != 2) {
        PyErr_Format(PyExc_ValueError, "expected 2 values to unpack, got %zd", PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return -1;
    }
    *k = Py_NewRef(PySequence_Fast_GET_ITEM(seq, 0));
    *v = Py_NewRef(PySequence_Fast_GET_ITEM(seq, 1));
    Py_DECREF(seq);
    return 0;
}

static int
enc_array(Buf *b, PyObject *v, int level)
{
    if (check_depth(level + 1) < 0)
        return -1;
    Py_ssize_t at = begin_len(b, 5, 1);
    if (at < 0)
        return -1;
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(v); i++) {
            PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(v, i));
            Py_ssize_t at2 = begin_len(b, 1, 1);
            int rc = (at2 < 0 || enc_anyvalue(b, item, level + 2) < 0 || end_len(b, at2, 1) < 0) ? -1 : 0;
            Py_DECREF(item);
            if (rc < 0)
                return -1;
        }
    }
    else {
        PyObject *it = PyObject_GetIter(v), *item;
        if (it == NULL)
            return -1;
        while ((item = PyIter_Next(it)) != NULL) {
            Py_ssize_t at2 = begin_len(b, 1, 1);
            int rc = (at2 < 0 || enc_anyvalue(b, item, level + 2) < 0 || end_len(b, at2, 1) < 0) ? -1 : 0;
            Py_DECREF(item);
            if (rc < 0) {
                Py_DECREF(it);
                return -1;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return -1;
    }
    return end_len(b, at, 1);
}

static int
enc_kvlist_item(Buf *b, PyObject *k, PyObject *v, int level)
{
    PyObject *key = PyObject_Str(k);
    if (key == NULL)
        return -1;
    Py_ssize_t at = begin_len(b, 1, 1);
    int rc = (at < 0 || enc_keyvalue(b, key, v, level) < 0 || end_len(b, at, 1) < 0) ? -1 : 0;
    Py_DECREF(key);
    return rc;
}

static int
enc_kvlist(Buf *b, PyObject *m, int level)
{
    if (check_depth(level + 1) < 0)
        return -1;
    Py_ssize_t at = begin_len(b, 6, 1);
    if (at < 0)
        return -1;
    if (PyDict_CheckExact(m)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(m, &pos, &k, &v)) {
            Py_INCREF(k);
            Py_INCREF(v);
            int rc = enc_kvlist_item(b, k, v, level + 2);
            Py_DECREF(k);
            Py_DECREF(v);
            if (rc < 0)
                return -1;
        }
    }
    else {
        PyObject *items = PyObject_CallMethodNoArgs(m, s_items);
        if (items == NULL)
            return -1;
        PyObject *it = PyObject_GetIter(items), *item;
        Py_DECREF(items);
        if (it == NULL)
            return -1;
        while ((item = PyIter_Next(it)) != NULL) {
            PyObject *k, *v;
            int rc = unpack_pair(item, &k, &v);
            Py_DECREF(item);
            if (rc == 0) {
                rc = enc_kvlist_item(b, k, v, level + 2);
                Py_DECREF(k);
                Py_DECREF(v);
            }
            if (rc < 0) {
                Py_DECREF(it);
                return -1;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return -1;
    }
    return end_len(b, at, 1);
}

/* the body of an AnyValue, in the stock encoder's order of isinstance checks */
static int
enc_anyvalue(Buf *b, PyObject *v, int level)
{
    if (check_depth(level) < 0)
        return -1;
    if (v == Py_None)
        return 0;
    if (PyBool_Check(v))
        return put_varint_field(b, 2, v == Py_True);
    if (PyUnicode_Check(v))
        return put_str_field(b, 1, v, 1);
    if (PyLong_Check(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            PyErr_Format(PyExc_ValueError, "Value out of range: %R", v);
            return -1;
        }
        if (x == -1 && PyErr_Occurred())
            return -1;
        return put_varint_field(b, 3, (uint64_t)x);
    }
    if (PyFloat_Check(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t u;
        memcpy(&u, &d, 8);
        return put_fixed64_field(b, 4, u);
    }
    if (PyBytes_Check(v))
        return put_bytes_field(b, 7, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));

    int r = (PyList_CheckExact(v) || PyTuple_CheckExact(v)) ? 1
            : PyDict_CheckExact(v)                          ? 0
                                                            : PyObject_IsInstance(v, ABC_Sequence);
    if (r < 0)
        return -1;
    int is_map = 0;
    if (!r) {
        is_map = PyDict_CheckExact(v) ? 1 : PyObject_IsInstance(v, ABC_Mapping);
        if (is_map < 0)
            return -1;
    }
    if (!r && !is_map) {
        PyErr_Format(PyExc_TypeError, "Invalid type %R of value %S", (PyObject *)Py_TYPE(v), v);
        return -1;
    }
    if (Py_EnterRecursiveCall(" while encoding an OTLP attribute value"))
        return -1;
    int rc = r ? enc_array(b, v, level) : enc_kvlist(b, v, level);
    Py_LeaveRecursiveCall();
    return rc;
}

/* ---- attributes (repeated KeyValue, one bad key dropped, not the batch) ----------------- */

static int
enc_attribute(Buf *b, uint32_t field, PyObject *key, PyObject *value, int level)
{
    Py_ssize_t mark = b->n;
    Py_ssize_t at = begin_len(b, field, 1);
    if (at >= 0 && enc_keyvalue(b, key, value, level) == 0 && end_len(b, at, 1) == 0)
        return 0;
    b->n = mark;
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1; /* KeyboardInterrupt and friends go up, as in the stock encoder */
    PyObject *exc = PyErr_GetRaisedException();
    if (OnDrop != NULL && OnDrop != Py_None) {
        PyObject *r = PyObject_CallFunctionObjArgs(OnDrop, key, exc, NULL);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                Py_DECREF(exc);
                return -1;
            }
            PyErr_Clear(); /* a failing log call must not cost the batch */
        }
        Py_XDECREF(r);
    }
    Py_DECREF(exc);
    return 0;
}

static int
enc_attr_dict(Buf *b, uint32_t field, PyObject *d, int level)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        int rc = enc_attribute(b, field, k, v, level);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* ``_encode_attributes(attrs)``: BoundedAttributes are read through their
 * ``_dict`` (the Mapping interface takes a lock per key).  ``level``: the
 * nesting level of the KeyValue messages in the request. */
static int
enc_attributes(Buf *b, uint32_t field, PyObject *attrs, int level)
{
    if (attrs == Py_None)
        return 0;
    PyObject *d = sdk_plain_dict(attrs);
    if (d != NULL) {
        int rc = enc_attr_dict(b, field, d, level);
        Py_DECREF(d);
        return rc;
    }
    int truth = PyObject_IsTrue(attrs);
    if (truth <= 0)
        return truth;
    PyObject *items = PyObject_CallMethodNoArgs(attrs, s_items);
    if (items == NULL)
        return -1;
    PyObject *it = PyObject_GetIter(items), *item;
    Py_DECREF(items);
    if (it == NULL)
        return -1;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *k, *v;
        int rc = unpack_pair(item, &k, &v);
        Py_DECREF(item);
        if (rc == 0) {
            rc = enc_attribute(b, field, k, v, level);
            Py_DECREF(k);
            Py_DECREF(v);
        }
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* ---- span pieces ------------------------------------------------------------------------------ */

/* SpanContext fields (new references); SpanContext is a tuple subclass */
static int
ctx_get(PyObject *ctx, PyObject **tid, PyObject **sid, PyObject **remote, PyObject **tstate)
{
    PyObject **outs[4] = {tid, sid, remote, tstate};
    static const Py_ssize_t index[4] = {0, 1, 2, 4};
    for (int i = 0; i < 4; i++) {
        if (outs[i] == NULL)
            continue;
        *outs[i] = sdk_context_item(ctx, index[i]);
        if (*outs[i] == NULL) {
            for (int j = 0; j < i; j++)
                if (outs[j])
                    Py_CLEAR(*outs[j]);
            return -1;
        }
    }
    return 0;
}

/* ``flags``: HAS_IS_REMOTE, plus IS_REMOTE when ``ctx and ctx.is_remote`` */
static int
span_flags(PyObject *ctx, uint32_t *flags)
{
    *flags = 0x100;
    int t = PyObject_IsTrue(ctx);
    if (t <= 0)
        return t;
    PyObject *remote;
    if (ctx_get(ctx, NULL, NULL, &remote, NULL) < 0)
        return -1;
    t = PyObject_IsTrue(remote);
    Py_DECREF(remote);
    if (t < 0)
        return -1;
    if (t)
        *flags |= 0x200;
    return 0;
}

/* ``",".join(f"{k}={v}" for k, v in trace_state.items())`` or None */
static PyObject *
trace_state_str(PyObject *ts)
{
    if (ts == Py_None)
        return Py_NewRef(Py_None);
    PyObject *items = NULL, *d = SDK_IS(ts, SDK_T_TRACE_STATE) ? sdk_plain_dict(ts) : NULL;
    if (d != NULL) {
        Py_ssize_t size = PyDict_GET_SIZE(d);
        Py_DECREF(d);
        if (size == 0)
            return Py_NewRef(s_empty);
    }
    items = PyObject_CallMethodNoArgs(ts, s_items);
    if (items == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(items), *item;
    Py_DECREF(items);
    if (it == NULL)
        return NULL;
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *k, *v, *part = NULL;
        int rc = unpack_pair(item, &k, &v);
        Py_DECREF(item);
        if (rc == 0) {
            PyObject *fk = PyObject_Format(k, s_empty), *fv = fk ? PyObject_Format(v, s_empty) : NULL;
            if (fv)
                part = PyUnicode_FromFormat("%U=%U", fk, fv);
            Py_XDECREF(fk);
            Py_XDECREF(fv);
            Py_DECREF(k);
            Py_DECREF(v);
        }
        if (part == NULL || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            Py_DECREF(it);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(part);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        Py_DECREF(parts);
        return NULL;
    }
    PyObject *r = PyUnicode_Join(s_comma, parts);
    Py_DECREF(parts);
    return r;
}

static PyObject *
get(PyObject *o, PyObject *name)
{
    return PyObject_GetAttr(o, name);
}


static int
enc_event(Buf *b, PyObject *ev)
{
    PyObject *ev_f[3] = {NULL}, *dropped = NULL;
    int rc = -1;
    if (SDK_READ(ev, SDK_T_EVENT, SDK_EVENT_FIELDS, ev_f) < 0)
        goto done;
    PyObject *ts = ev_f[SDK_EV_TIMESTAMP], *name = ev_f[SDK_EV_NAME], *attrs = ev_f[SDK_EV_ATTRIBUTES];
    dropped = SDK_IS(ev, SDK_T_EVENT) ? dropped_of(attrs, SDK_T_ATTRIBUTES) : get(ev, s_dropped_attributes);
    if (dropped == NULL)
        goto done;
    Py_ssize_t at = begin_len(b, 11, 1);
    if (at < 0 || put_unsigned_field(b, 1, ts, UINT64_MAX, WT_I64) < 0 || put_str_field(b, 2, name, 0) < 0 ||
        enc_attributes(b, 3, attrs, 6) < 0 || put_unsigned_field(b, 4, dropped, UINT32_MAX, WT_VARINT) < 0 ||
        end_len(b, at, 1) < 0)
        goto done;
    rc = 0;
done:
    for (int i = 0; i < 3; i++)
        Py_XDECREF(ev_f[i]);
    Py_XDECREF(dropped);
    return rc;
}

static int
enc_link(Buf *b, PyObject *link)
{
    PyObject *ln_f[2] = {NULL}, *dropped = NULL, *tid = NULL, *sid = NULL;
    int rc = -1;
    uint32_t flags;
    if (SDK_READ(link, SDK_T_LINK, SDK_LINK_FIELDS, ln_f) < 0)
        goto done;
    PyObject *ctx = ln_f[SDK_LN_CONTEXT], *attrs = ln_f[SDK_LN_ATTRIBUTES];
    dropped = SDK_IS(link, SDK_T_LINK) ? dropped_of(attrs, SDK_T_ATTRIBUTES) : get(link, s_dropped_attributes);
    if (dropped == NULL || ctx_get(ctx, &tid, &sid, NULL, NULL) < 0 || span_flags(ctx, &flags) < 0)
        goto done;
    Py_ssize_t at = begin_len(b, 13, 1);
    if (at < 0 || put_id_field(b, 1, tid, 16) < 0 || put_id_field(b, 2, sid, 8) < 0 ||
        enc_attributes(b, 4, attrs, 6) < 0 || put_unsigned_field(b, 5, dropped, UINT32_MAX, WT_VARINT) < 0 ||
        put_fixed32_field(b, 6, flags) < 0 || end_len(b, at, 1) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(ln_f[0]);
    Py_XDECREF(ln_f[1]);
    Py_XDECREF(dropped);
    Py_XDECREF(tid);
    Py_XDECREF(sid);
    return rc;
}

/* events or links: each one (a BoundedList is read through its deque, without
 * the lock and copy of its __iter__); an empty one costs no iterator */
static int
enc_repeated(Buf *b, PyObject *seq, int (*enc)(Buf *, PyObject *))
{
    PyObject *src = sdk_items(seq);
    if (src == NULL)
        return -1;
    Py_ssize_t n = PyObject_Length(src);
    if (n == 0) {
        Py_DECREF(src);
        return 0;
    }
    if (n < 0)
        PyErr_Clear(); /* no len(): iterate and see */
    PyObject *it = PyObject_GetIter(src), *item;
    Py_DECREF(src);
    if (it == NULL)
        return -1;
    while ((item = PyIter_Next(it)) != NULL) {
        int rc = enc(b, item);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int
enc_status(Buf *b, PyObject *status)
{
    if (status == Py_None)
        return 0;
    PyObject *st_f[2];
    if (SDK_READ(status, SDK_T_STATUS, SDK_STATUS_FIELDS, st_f) < 0)
        return -1;
    PyObject *code = st_f[SDK_ST_CODE], *desc = st_f[SDK_ST_DESCRIPTION];
    PyObject *value = NULL;
    for (int i = 0; i < n_codes; i++)
        if (code_keys[i] == code) {
            value = PyLong_FromLong(code_vals[i]);
            break;
        }
    if (value == NULL && !PyErr_Occurred())
        value = PyObject_GetAttr(code, s_value);
    Py_DECREF(code);
    if (value == NULL) {
        Py_DECREF(desc);
        return -1;
    }
    int rc = -1;
    Py_ssize_t at = begin_len(b, 15, 1);
    if (at >= 0 && put_str_field(b, 2, desc, 0) == 0 && put_enum_field(b, 3, value) == 0 && end_len(b, at, 1) == 0)
        rc = 0;
    Py_DECREF(desc);
    Py_DECREF(value);
    return rc;
}

static PyObject *
kind_value(PyObject *kind)
{
    for (int i = 0; i < n_kinds; i++)
        if (kind_keys[i] == kind)
            return PyLong_FromLong(kind_vals[i]);
    return PyObject_GetItem(KindMap, kind); /* KeyError for an unknown kind, as stock */
}

/* one Span message body */
static int
enc_span(Buf *b, PyObject *span)
{
    int fast = SDK_IS(span, SDK_T_SPAN);
    PyObject *f[SDK_SPAN_N];
    PyObject *tid = NULL, *sid = NULL, *tstate = NULL, *tsstr = NULL, *kindv = NULL;
    PyObject *d_attrs = NULL, *d_events = NULL, *d_links = NULL;
    int rc = -1, has_parent;
    uint32_t flags;

    if (sdk_span_read(span, f) < 0)
        return -1;
    PyObject *ctx = f[SDK_CONTEXT], *parent = f[SDK_PARENT], *name = f[SDK_NAME], *kind = f[SDK_KIND];
    PyObject *start = f[SDK_START_TIME], *end = f[SDK_END_TIME], *attrs = f[SDK_ATTRIBUTES];
    PyObject *events = f[SDK_EVENTS], *links = f[SDK_LINKS], *status = f[SDK_STATUS];
    if (ctx_get(ctx, &tid, &sid, NULL, &tstate) < 0 || !(tsstr = trace_state_str(tstate)))
        goto done;
    if ((has_parent = PyObject_IsTrue(parent)) < 0 || !(kindv = kind_value(kind)))
        goto done;
    if (fast) {
        if (!(d_attrs = dropped_of(attrs, SDK_T_ATTRIBUTES)) || !(d_events = dropped_of(events, SDK_T_LIST)) ||
            !(d_links = dropped_of(links, SDK_T_LIST)))
            goto done;
    }
    else if (!(d_attrs = get(span, s_dropped_attributes)) || !(d_events = get(span, s_dropped_events)) ||
             !(d_links = get(span, s_dropped_links)))
        goto done;
    if (span_flags(parent, &flags) < 0)
        goto done;

    if (put_id_field(b, 1, tid, 16) < 0 || put_id_field(b, 2, sid, 8) < 0 || put_str_field(b, 3, tsstr, 0) < 0)
        goto done;
    if (has_parent) {
        PyObject *psid;
        if (ctx_get(parent, NULL, &psid, NULL, NULL) < 0)
            goto done;
        int r = put_id_field(b, 4, psid, 8);
        Py_DECREF(psid);
        if (r < 0)
            goto done;
    }
    if (put_str_field(b, 5, name, 0) < 0 || put_enum_field(b, 6, kindv) < 0 ||
        put_unsigned_field(b, 7, start, UINT64_MAX, WT_I64) < 0 ||
        put_unsigned_field(b, 8, end, UINT64_MAX, WT_I64) < 0 || enc_attributes(b, 9, attrs, 5) < 0 ||
        put_unsigned_field(b, 10, d_attrs, UINT32_MAX, WT_VARINT) < 0 || enc_repeated(b, events, enc_event) < 0 ||
        put_unsigned_field(b, 12, d_events, UINT32_MAX, WT_VARINT) < 0 || enc_repeated(b, links, enc_link) < 0 ||
        put_unsigned_field(b, 14, d_links, UINT32_MAX, WT_VARINT) < 0 || enc_status(b, status) < 0 ||
        put_fixed32_field(b, 16, flags) < 0)
        goto done;
    rc = 0;
done:
    for (int i = 0; i < SDK_SPAN_N; i++)
        Py_XDECREF(f[i]);
    Py_XDECREF(tid);
    Py_XDECREF(sid);
    Py_XDECREF(tstate);
    Py_XDECREF(tsstr);
    Py_XDECREF(kindv);
    Py_XDECREF(d_attrs);
    Py_XDECREF(d_events);
    Py_XDECREF(d_links);
    return rc;
}

/* ---- grouping and the request ------------------------------------------------------------------ */

/* A group: [key, index dict (key -> position in children), children list].
 * Resource groups' children are scope groups; scope groups' children are spans. */
static PyObject *
group_new(PyObject *key)
{
    PyObject *idx = PyDict_New(), *children = PyList_New(0);
    if (idx == NULL || children == NULL) {
        Py_XDECREF(idx);
        Py_XDECREF(children);
        return NULL;
    }
    return Py_BuildValue("[ONN]", key, idx, children);
}

/* the child group of ``parent`` for ``key`` (borrowed), created on first sight;
 * equal keys share one group, as in a dict */
static PyObject *
group_child(PyObject *parent, PyObject *key)
{
    PyObject *idx = PyList_GET_ITEM(parent, 1), *children = PyList_GET_ITEM(parent, 2);
    PyObject *pos = PyDict_GetItemWithError(idx, key);
    if (pos != NULL)
        return PyList_GET_ITEM(children, PyLong_AsSsize_t(pos));
    if (PyErr_Occurred())
        return NULL;
    PyObject *g = group_new(key);
    if (g == NULL)
        return NULL;
    PyObject *n = PyLong_FromSsize_t(PyList_GET_SIZE(children));
    int rc = (n == NULL || PyDict_SetItem(idx, key, n) < 0 || PyList_Append(children, g) < 0) ? -1 : 0;
    Py_XDECREF(n);
    Py_DECREF(g);
    return rc < 0 ? NULL : PyList_GET_ITEM(children, PyList_GET_SIZE(children) - 1);
}

static int
enc_scope_spans(Buf *b, PyObject *sg)
{
    PyObject *scope = PyList_GET_ITEM(sg, 0), *spans = PyList_GET_ITEM(sg, 2);
    Py_ssize_t at = begin_len(b, 2, 3);
    if (at < 0)
        return -1;
    Py_ssize_t sat = begin_len(b, 1, 1);
    if (sat < 0)
        return -1;
    PyObject *schema_url = Py_NewRef(Py_None);
    if (scope != Py_None) {
        PyObject *name = get(scope, s_name), *version = name ? get(scope, s_version) : NULL;
        PyObject *attrs = version ? get(scope, s_attributes) : NULL;
        int rc = (attrs == NULL || put_str_field(b, 1, name, 0) < 0 || put_str_field(b, 2, version, 0) < 0 ||
                  enc_attributes(b, 3, attrs, 5) < 0) ? -1 : 0;
        Py_XDECREF(name);
        Py_XDECREF(version);
        Py_XDECREF(attrs);
        Py_SETREF(schema_url, rc == 0 ? get(scope, s_schema_url) : NULL);
        if (schema_url == NULL)
            return -1;
    }
    if (end_len(b, sat, 1) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(spans); i++) {
        Py_ssize_t spat = begin_len(b, 2, 2);
        if (spat < 0 || enc_span(b, PyList_GET_ITEM(spans, i)) < 0 || end_len(b, spat, 2) < 0)
            goto fail;
    }
    if (put_str_field(b, 3, schema_url, 0) < 0 || end_len(b, at, 3) < 0)
        goto fail;
    Py_DECREF(schema_url);
    return 0;
fail:
    Py_DECREF(schema_url);
    return -1;
}

static int
enc_resource_spans(Buf *b, PyObject *rg)
{
    PyObject *resource = PyList_GET_ITEM(rg, 0), *scopes = PyList_GET_ITEM(rg, 2);
    Py_ssize_t at = begin_len(b, 1, 3);
    if (at < 0)
        return -1;
    PyObject *attrs = get(resource, s_attributes);
    if (attrs == NULL)
        return -1;
    Py_ssize_t rat = begin_len(b, 1, 2);
    int rc = (rat < 0 || enc_attributes(b, 1, attrs, 4) < 0 || end_len(b, rat, 2) < 0) ? -1 : 0;
    Py_DECREF(attrs);
    if (rc < 0)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(scopes); i++)
        if (enc_scope_spans(b, PyList_GET_ITEM(scopes, i)) < 0)
            return -1;
    PyObject *schema_url = get(resource, s_schema_url);
    if (schema_url == NULL)
        return -1;
    rc = put_str_field(b, 3, schema_url, 0);
    Py_DECREF(schema_url);
    if (rc < 0)
        return -1;
    return end_len(b, at, 3);
}

/* group spans: resource -> scope -> spans, first-seen order.  Consecutive spans
 * almost always share the very same Resource and scope objects, so identity is
 * checked before hashing (Resource.__hash__ serialises its attributes to JSON). */
static PyObject *
group_spans(PyObject *seq)
{
    PyObject *root = group_new(Py_None);
    PyObject *last_res = NULL, *last_scope = NULL, *rg = NULL, *sg = NULL;
    if (root == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *span = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *res = sdk_get(span, SDK_T_SPAN, SDK_RESOURCE);
        if (res == NULL)
            goto fail;
        PyObject *scope = sdk_get(span, SDK_T_SPAN, SDK_SCOPE);
        if (scope == NULL) {
            Py_DECREF(res);
            goto fail;
        }
        int truth = PyObject_IsTrue(scope); /* ``instrumentation_scope or None`` */
        if (truth < 0) {
            Py_DECREF(res);
            Py_DECREF(scope);
            goto fail;
        }
        if (!truth)
            Py_SETREF(scope, Py_NewRef(Py_None));
        if (rg == NULL || res != last_res) {
            rg = group_child(root, res);
            Py_XSETREF(last_res, res);
            Py_CLEAR(last_scope);
            if (rg == NULL) {
                Py_DECREF(scope);
                goto fail;
            }
        }
        else
            Py_DECREF(res);
        if (last_scope == NULL || scope != last_scope) {
            sg = group_child(rg, scope);
            Py_XSETREF(last_scope, scope);
            if (sg == NULL)
                goto fail;
        }
        else
            Py_DECREF(scope);
        if (PyList_Append(PyList_GET_ITEM(sg, 2), span) < 0)
            goto fail;
    }
    Py_XDECREF(last_res);
    Py_XDECREF(last_scope);
    return root;
fail:
    Py_XDECREF(last_res);
    Py_XDECREF(last_scope);
    Py_DECREF(root);
    return NULL;
}

static PyObject *
encode_spans(PyObject *module, PyObject *spans)
{
    if (KindMap == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_otlpenc.setup() has not been called");
        return NULL;
    }
    if (sdk_types_ready() < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(spans, "spans must be iterable");
    if (seq == NULL)
        return NULL;
    PyObject *root = group_spans(seq);
    if (root == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Buf b = {NULL, 0, 0, 0};
    PyObject *out = NULL;
    if (buf_grow(&b, 256 + 512 * PySequence_Fast_GET_SIZE(seq)) == 0) {
        PyObject *resources = PyList_GET_ITEM(root, 2);
        Py_ssize_t i;
        for (i = 0; i < PyList_GET_SIZE(resources); i++)
            if (enc_resource_spans(&b, PyList_GET_ITEM(resources, i)) < 0)
                break;
        if (i == PyList_GET_SIZE(resources))
            out = PyBytes_FromStringAndSize(b.p, b.n);
    }
    PyMem_Free(b.p);
    Py_DECREF(root);
    Py_DECREF(seq);
    return out;
}

/* ---- setup ---------------------------------------------------------------------------------------- */

static int
take(PyObject *config, const char *key, PyObject **slot)
{
    PyObject *v = PyDict_GetItemString(config, key);
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "_otlpenc.setup: missing %s", key);
        return -1;
    }
    Py_XSETREF(*slot, Py_NewRef(v));
    return 0;
}

static int
load_enum(PyObject *map, PyObject **keys, long *vals, int *n)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    *n = 0;
    while (PyDict_Next(map, &pos, &k, &v) && *n < MAX_ENUM) {
        long x = PyLong_AsLong(v);
        if (x == -1 && PyErr_Occurred())
            return -1;
        keys[*n] = k; /* kept alive by the dict we hold */
        vals[*n] = x;
        (*n)++;
    }
    return 0;
}

static PyObject *
setup(PyObject *module, PyObject *config)
{
    if (!PyDict_Check(config)) {
        PyErr_SetString(PyExc_TypeError, "setup(config): config must be a dict");
        return NULL;
    }
    if (take(config, "Sequence", &ABC_Sequence) < 0 ||
        take(config, "Mapping", &ABC_Mapping) < 0 || take(config, "kind_map", &KindMap) < 0 ||
        take(config, "status_codes", &StatusCodes) < 0 || take(config, "on_drop", &OnDrop) < 0)
        return NULL;
    if (!PyDict_Check(KindMap) || !PyDict_Check(StatusCodes)) {
        PyErr_SetString(PyExc_TypeError, "setup: kind_map and status_codes must be dicts");
        return NULL;
    }
    if (load_enum(KindMap, kind_keys, kind_vals, &n_kinds) < 0 ||
        load_enum(StatusCodes, code_keys, code_vals, &n_codes) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode_spans", encode_spans, METH_O,
     "encode_spans(spans) -> bytes: a serialized ExportTraceServiceRequest"},
    {"setup", setup, METH_O, "setup(config: dict): Sequence, Mapping, kind_map, status_codes and the on_drop(key, exc) callback"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlpenc",
                                    "C encoder for OTLP trace requests (see scope_otel.export.otlp).", -1,
                                    methods};

#define INTERN(var, text)                                   \
    do {                                                    \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                    \
    } while (0)

PyMODINIT_FUNC
PyInit__otlpenc(void)
{
    if (sdk_fields_init() < 0)
        return NULL;
    INTERN(s_name, "name");
    INTERN(s_attributes, "attributes");
    INTERN(s_dropped, "dropped");
    INTERN(s_dropped_attributes, "dropped_attributes");
    INTERN(s_dropped_events, "dropped_events");
    INTERN(s_dropped_links, "dropped_links");
    INTERN(s_value, "value");
    INTERN(s_items, "items");
    INTERN(s_version, "version");
    INTERN(s_schema_url, "schema_url");
    INTERN(s_to_bytes, "to_bytes");
    INTERN(s_empty, "");
    INTERN(s_comma, ",");
    INTERN(s_length, "length");
    INTERN(s_byteorder, "byteorder");
    INTERN(s_big, "big");
    INTERN(s_signed, "signed");
    return PyModule_Create(&module);
}
