/* Native blocks merged, LowCardinality columns written as such, rows put in the
 * table's sorting-key order: what the store writer does to a drain before its INSERT.
 *
 * Runs only in the store-writer process (store/writer.py via store/staging.py);
 * the application side is encode.c.  Input and output are ClickHouse Native
 * data as encode.c (or clickhouse-connect) writes it.
 */
#define _GNU_SOURCE 1 /* memmem; the value pyconfig.h gives it on 3.10 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "scope_buf.h"
#include "chnative.h"

/* -- merging Native blocks ------------------------------------------------------
 *
 * chDB pays a fixed cost per block on insert (type conversion, squashing),
 * which with the exporter's 512-row blocks is a large part of its work.  The store
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
    if (put_raw(out, tmp, varint_write(tmp, first->cols)) < 0 || put_raw(out, tmp, varint_write(tmp, rows)) < 0)
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
 * for otel_traces about half of chDB's insert cost.  The store writer copies every row while merging anyway;
 * given the key (order: ((column name, divisor), ...)) it copies them in key
 * order.  A key that differs from the table's costs time, never rows:
 * ClickHouse then sorts the block itself.
 *
 * Key parts: a String column (compared as ClickHouse compares strings: bytes,
 * then length), or an integer column (Int64, DateTime64(9), UInt64, UInt32),
 * optionally divided (toDateTime(Timestamp) is Timestamp floor-divided by
 * 10^9).  Ties keep their input order.  Text parts with few distinct values
 * become ranks, and parts whose ranges fit in 64 bits together one integer;
 * a key of at most 32 bits (otel_traces' key usually packs into a few) is
 * radix-sorted.
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
 * few, instead of a memcmp per comparison.  Left as text past
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

PyObject *
chn_merge_blocks(PyObject *self, PyObject *args)
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
