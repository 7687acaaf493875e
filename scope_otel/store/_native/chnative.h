/* What the three files of scope_otel.store._chnative share: the two methods and the
 * encoder's one-time set-up, called from the module's init (module.c). */
#ifndef SCOPE_OTEL_CHNATIVE_H
#define SCOPE_OTEL_CHNATIVE_H

#include <Python.h>

PyObject *chn_encode_spans(PyObject *self, PyObject *args); /* encode.c */
int chn_encode_init(void);                                   /* encode.c */
PyObject *chn_merge_blocks(PyObject *self, PyObject *args); /* merge.c */

#endif /* SCOPE_OTEL_CHNATIVE_H */
