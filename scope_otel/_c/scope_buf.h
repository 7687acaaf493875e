/* The growable output buffer and varints shared by scope-otel's C encoders.
 *
 * Used by the OTLP request encoder (export/_otlpenc.c) and the ClickHouse
 * Native encoder and block merger (store/_native/encode.c, merge.c), so all grow,
 * check for overflow and fail the same way.
 *
 * RESERVE(b, k) makes room for k more bytes and is an expression: 0, or -1
 * with a Python exception set (MemoryError; BufferError for a borrowed
 * buffer, which is someone else's fixed-size memory and never grows).
 * Callers write ``if (RESERVE(b, k) < 0) return -1;`` and may then write k
 * bytes at b->p + b->n without further checks.
 */
#ifndef SCOPE_OTEL_BUF_H
#define SCOPE_OTEL_BUF_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *p;
    Py_ssize_t n, cap;
    int borrowed; /* p is someone else's memory of fixed size: never grow */
} Buf;

/* Grow b to hold at least `extra` more bytes (capacity doubles from 256). */
static int
buf_grow(Buf *b, Py_ssize_t extra)
{
    if (b->borrowed) {
        PyErr_SetString(PyExc_BufferError, "scope-otel: the output buffer is too small");
        return -1;
    }
    if (extra < 0 || b->n > PY_SSIZE_T_MAX - extra) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = b->n + extra, cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Compared unsigned: a negative k (a size computed in a wider type that
 * overflowed Py_ssize_t) goes to buf_grow, which refuses it. */
#define RESERVE(b, k) (((size_t)(k) <= (size_t)((b)->cap - (b)->n)) ? 0 : buf_grow((b), (Py_ssize_t)(k)))

/* Write v as a base-128 varint (protobuf and ClickHouse use the same) at out;
 * returns the bytes written, at most 10. */
static inline Py_ssize_t
varint_write(char *out, uint64_t v)
{
    Py_ssize_t i = 0;
    while (v >= 0x80) {
        out[i++] = (char)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    out[i++] = (char)v;
    return i;
}

/* The bytes varint_write would write for v. */
static inline int
varint_size(uint64_t v)
{
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* ClickHouse Native writers: raw bytes, little-endian integers (the
 * machine's own order, hence the check), and a varint-length-prefixed string. */
#if PY_BIG_ENDIAN
#error "scope-otel's C encoders write little-endian integers with memcpy"
#endif

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

static inline int
put_bytes(Buf *b, const char *s, Py_ssize_t n)
{
    if (RESERVE(b, n + 10) < 0)
        return -1;
    b->n += varint_write(b->p + b->n, (uint64_t)n);
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}


#endif /* SCOPE_OTEL_BUF_H */
