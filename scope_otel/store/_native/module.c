/* scope_otel.store._chnative: the C twin of store/rows.py's span encoding (encode.c,
 * runs in the application) and the store writer's block merger (merge.c). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "chnative.h"

static PyMethodDef methods[] = {
    {"encode_spans", chn_encode_spans, METH_VARARGS,
     "encode_spans(spans, max_value_chars, trace_header, event_header, text, escape, resource,\n"
     "             readable_type, ctx_type) -> (traces, n, events, n_events, truncated, escaped)\n\n"
     "SDK spans as ClickHouse Native blocks (None for a table without rows)."},
    {"merge_blocks", chn_merge_blocks, METH_VARARGS,
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

PyMODINIT_FUNC
PyInit__chnative(void)
{
    if (chn_encode_init() < 0)
        return NULL;
    return PyModule_Create(&module);
}
