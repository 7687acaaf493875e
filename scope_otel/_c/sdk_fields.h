/* The OpenTelemetry SDK's private fields that scope-otel's C encoders read, named once.
 *
 * The OTLP encoder (export/_otlpenc.c) and the ClickHouse Native encoder
 * (store/_native/encode.c) read these attributes directly instead of going
 * through the SDK's public properties, which are Python functions returning
 * exactly these fields: several Python calls a span fewer.  Both do so only
 * for objects whose type is exactly the SDK class (ReadableSpan, Event,
 * Status, BoundedAttributes, BoundedList, TraceState), and use the public
 * property for anything else (subclasses, look-alikes), so a rename in the
 * SDK is one edit here and the public path keeps working meanwhile.
 *
 * sdk_fields_init() interns the names once, from the module's init function;
 * sdk_field[SDK_X] is then the interned attribute name.
 */
#ifndef SCOPE_OTEL_SDK_FIELDS_H
#define SCOPE_OTEL_SDK_FIELDS_H

#include <Python.h>

enum {
    /* ReadableSpan */
    SDK_NAME, SDK_CONTEXT, SDK_PARENT, SDK_KIND, SDK_START_TIME, SDK_END_TIME, SDK_ATTRIBUTES,
    SDK_EVENTS, SDK_LINKS, SDK_STATUS, SDK_RESOURCE, SDK_SCOPE,
    /* Event (also _name, _attributes) */
    SDK_TIMESTAMP,
    /* Status */
    SDK_STATUS_CODE, SDK_DESCRIPTION,
    /* BoundedAttributes and TraceState: their dict; BoundedList: its deque */
    SDK_DICT, SDK_DQ,
    SDK_N_FIELDS
};

static PyObject *sdk_field[SDK_N_FIELDS];

static int
sdk_fields_init(void)
{
    static const char *const names[SDK_N_FIELDS] = {
        "_name", "_context", "_parent", "_kind", "_start_time", "_end_time", "_attributes",
        "_events", "_links", "_status", "_resource", "_instrumentation_scope",
        "_timestamp",
        "_status_code", "_description",
        "_dict", "_dq",
    };
    for (int i = 0; i < SDK_N_FIELDS; i++)
        if (sdk_field[i] == NULL && (sdk_field[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return -1;
    return 0;
}

#endif /* SCOPE_OTEL_SDK_FIELDS_H */
