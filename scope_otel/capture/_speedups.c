/*
 * scope_otel.capture._speedups - the C twin of _pyring.py and _pyhot.py.
 *
 * Ring: a bounded, preallocated array of object references.  Every method
 * runs with the GIL held and calls no Python code while the ring's state is
 * inconsistent (old items are released only after the indices are updated),
 * so no lock is needed and a fork can never inherit a held one.
 *
 * HotPath: enter/exit/exception of runtime.py.  Same constructor arguments,
 * same token and record layout (records.py), same behaviour as _pyhot.py,
 * except where the innermost call lives: the twin sets its ContextVar on
 * every call; here the ContextVar holds a per-Context Stack set once (see
 * Stack), which is what makes a call cost no allocation but its token.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <time.h>

/* token layout: keep in sync with records.py */
#define T_SPAN_ID 0
#define T_TRACE_ID 1
#define T_PARENT_ID 2
#define T_FID 3
#define T_START_NS 4
#define T_OTEL_CTX 5
#define T_PREV 6
#define T_ARGS 7
#define T_EVENTS 8
#define T_OVERLAY 9
#define T_LEVEL 10
#define T_FLAGS 11
#define T_END_NS 12
#define T_STATUS 13
#define T_VALUE 14
#define TOKEN_LEN 15
#define CAP_ARGS 1
#define CAP_RETURN 2
#define CAP_STATE 4

/* The running thread's state without PyThreadState_Get's checks (the GIL is held). */
#if PY_VERSION_HEX >= 0x030D0000
#define THREAD_STATE() PyThreadState_GetUnchecked()
#else
#define THREAD_STATE() _PyThreadState_UncheckedGet()
#endif

/* An int from the runtime's tables (levels, flags, function ids): these are
 * small ints, read here without PyLong_AsLong's generality. -1 with an error
 * set on failure, as PyLong_AsLong. */
static inline long
table_long(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyLong_CheckExact(o) && PyUnstable_Long_IsCompact((PyLongObject *)o))
        return (long)PyUnstable_Long_CompactValue((PyLongObject *)o);
#else
    if (PyLong_CheckExact(o)) {
        Py_ssize_t size = Py_SIZE(o);
        if (size == 0)
            return 0;
        if (size == 1)
            return (long)((PyLongObject *)o)->ob_digit[0];
    }
#endif
    return PyLong_AsLong(o);
}

static inline double
table_double(PyObject *o)
{
    if (PyFloat_CheckExact(o))
        return PyFloat_AS_DOUBLE(o);
    return PyFloat_AsDouble(o);
}

/*
 * contextvars.Context's layout (Include/internal/pycore_context.h, the same
 * from 3.7 to 3.13): its variables are an immutable mapping replaced on
 * every ContextVar.set, so (Context, mapping) identifies the values of all
 * variables.  The hot path caches the OpenTelemetry context under that key:
 * PyContextVar_Get caches only variables that were set, and with no span
 * ever attached (the default Context) it walks the mapping on every call.
 */
#if PY_VERSION_HEX >= 0x03070000 && PY_VERSION_HEX < 0x030E0000
#define HAVE_CTX_LAYOUT 1
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
    PyObject *ctx_vars;
    PyObject *ctx_weakreflist;
    int ctx_entered;
} ContextLayout;
#define CTX_VARS(ctx) (((ContextLayout *)(ctx))->ctx_vars)
#else
#define HAVE_CTX_LAYOUT 0
#endif


/* ====================================================================== Ring */

typedef struct {
    PyObject_HEAD
    PyObject **slots;
    Py_ssize_t cap;
    uint64_t head, tail;      /* items ever taken / stored (counters) */
    Py_ssize_t hpos, tpos;    /* their slots: head % cap, tail % cap, kept without dividing */
    int mode;                 /* 0 drop_oldest, 1 drop_newest, 2 block */
    uint64_t dropped_oldest, dropped_newest, high_water;
    Py_ssize_t wake_at;
    PyObject *wake;
} RingObject;

static PyTypeObject Ring_Type;

static int
Ring_init(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "overflow", NULL};
    Py_ssize_t cap;
    const char *overflow = "drop_oldest";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|s", kwlist, &cap, &overflow))
        return -1;
    if (cap < 1) {
        PyErr_SetString(PyExc_ValueError, "capacity must be a positive integer");
        return -1;
    }
    if (strcmp(overflow, "drop_oldest") == 0) self->mode = 0;
    else if (strcmp(overflow, "drop_newest") == 0) self->mode = 1;
    else if (strcmp(overflow, "block") == 0) self->mode = 2;
    else {
        PyErr_SetString(PyExc_ValueError, "overflow must be one of drop_oldest, drop_newest, block");
        return -1;
    }
    if (self->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Ring already initialised");
        return -1;
    }
    self->slots = PyMem_Calloc((size_t)cap, sizeof(PyObject *));
    if (self->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->cap = cap;
    return 0;
}

static int
Ring_traverse(RingObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->wake);
    if (self->slots) {
        for (uint64_t i = self->head; i < self->tail; i++)
            Py_VISIT(self->slots[i % (uint64_t)self->cap]);
    }
    return 0;
}

static int
Ring_clear(RingObject *self)
{
    Py_CLEAR(self->wake);
    if (self->slots) {
        while (self->head < self->tail) {
            PyObject *o = self->slots[self->hpos];
            self->slots[self->hpos] = NULL;
            self->head++;
            if (++self->hpos == self->cap)
                self->hpos = 0;
            Py_XDECREF(o);
        }
    }
    return 0;
}

static void
Ring_dealloc(RingObject *self)
{
    PyObject_GC_UnTrack(self);
    Ring_clear(self);
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void
call_wake(RingObject *self)
{
    PyObject *cb = self->wake;
    if (cb == NULL)
        return;
    Py_INCREF(cb);
    PyObject *r = PyObject_CallNoArgs(cb);
    Py_DECREF(cb);
    if (r == NULL)
        PyErr_WriteUnraisable(cb);
    else
        Py_DECREF(r);
}

/* Store item; return the new size or -1 when refused (never sets an error). */
static inline Py_ssize_t
ring_put(RingObject *self, PyObject *item)
{
    uint64_t cap = (uint64_t)self->cap;
    uint64_t size = self->tail - self->head;
    PyObject *old = NULL;
    int wake = 0;
    if (size >= cap) {
        if (self->mode == 0) {
            old = self->slots[self->hpos];
            self->slots[self->hpos] = NULL;
            self->head++;
            if (++self->hpos == self->cap)
                self->hpos = 0;
            self->dropped_oldest++;
            wake = (self->dropped_oldest & 1023) == 1;
            size--;
        }
        else {
            if (self->mode == 1) {
                self->dropped_newest++;
                wake = (self->dropped_newest & 1023) == 1;
            }
            if (wake)
                call_wake(self);
            return -1;
        }
    }
    Py_INCREF(item);
    self->slots[self->tpos] = item;
    self->tail++;
    if (++self->tpos == self->cap)
        self->tpos = 0;
    size++;
    if (size > self->high_water)
        self->high_water = size;
    Py_XDECREF(old);  /* may run arbitrary code: state is consistent by now */
    if (wake || (Py_ssize_t)size == self->wake_at)
        call_wake(self);
    return (Py_ssize_t)size;
}

static PyObject *
Ring_put(RingObject *self, PyObject *item)
{
    return PyLong_FromSsize_t(ring_put(self, item));
}

static PyObject *
Ring_take(RingObject *self, PyObject *arg)
{
    Py_ssize_t limit = PyLong_AsSsize_t(arg);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    uint64_t avail = self->tail - self->head;
    Py_ssize_t n = limit < 0 ? 0 : ((uint64_t)limit < avail ? limit : (Py_ssize_t)avail);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    Py_ssize_t j = self->hpos;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyList_SET_ITEM(out, i, self->slots[j]);  /* steals the ring's reference */
        self->slots[j] = NULL;
        if (++j == self->cap)
            j = 0;
    }
    self->head += (uint64_t)n;
    self->hpos = j;
    return out;
}

static PyObject *
Ring_set_wake(RingObject *self, PyObject *args)
{
    PyObject *cb;
    Py_ssize_t at;
    if (!PyArg_ParseTuple(args, "On", &cb, &at))
        return NULL;
    Py_XSETREF(self->wake, cb == Py_None ? NULL : Py_NewRef(cb));
    self->wake_at = at;
    Py_RETURN_NONE;
}

static PyObject *
Ring_counters(RingObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:n}",
        "written", (unsigned long long)self->tail,
        "read", (unsigned long long)(self->head - self->dropped_oldest),
        "dropped_oldest", (unsigned long long)self->dropped_oldest,
        "dropped_newest", (unsigned long long)self->dropped_newest,
        "high_water", (unsigned long long)self->high_water,
        "size", (unsigned long long)(self->tail - self->head),
        "capacity", self->cap);
}

static Py_ssize_t
Ring_len(RingObject *self)
{
    return (Py_ssize_t)(self->tail - self->head);
}

static PyObject *
Ring_get_capacity(RingObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(self->cap);
}

static PyMethodDef Ring_methods[] = {
    {"put", (PyCFunction)Ring_put, METH_O, "Store item; the new size, or -1 if not stored."},
    {"take", (PyCFunction)Ring_take, METH_O, "Remove and return up to limit oldest items."},
    {"set_wake", (PyCFunction)Ring_set_wake, METH_VARARGS, "set_wake(callback, at_size)"},
    {"counters", (PyCFunction)Ring_counters, METH_NOARGS, "Counters as a dict."},
    {NULL}
};

static PyGetSetDef Ring_getset[] = {
    {"capacity", (getter)Ring_get_capacity, NULL, "capacity", NULL},
    {NULL}
};

static PySequenceMethods Ring_as_sequence = {
    .sq_length = (lenfunc)Ring_len,
};

static PyTypeObject Ring_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scope_otel.capture._speedups.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Bounded ring of object references (C twin of _pyring.Ring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_traverse = (traverseproc)Ring_traverse,
    .tp_clear = (inquiry)Ring_clear,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
    .tp_as_sequence = &Ring_as_sequence,
};

/* ====================================================================== Call */

/*
 * A recorded call: the token enter() returns and, once ended, the record put
 * into the ring.  It reads and writes like the pure-Python twin's list
 * (indices in records.py), so the Python side (overlay, events, correlation)
 * does not care which implementation made it.  Numbers stay C integers until
 * someone indexes them (the worker, off the hot path).
 */
typedef struct {
    PyObject_HEAD
    uint64_t span_id, parent_id;
    int64_t start, end;
    long level, flags, status;
    uint64_t dropped;    /* events past the hot path's max_events (see add_event) */
    int64_t dropped_at;  /* when the first of them happened */
    PyObject *trace;     /* PyLong, shared with the caller */
    PyObject *fid;       /* the int given to enter() */
    PyObject *octx, *prev, *args, *events, *overlay, *value;
    /* Events as the hot path adds them: a C array, turned into the (name, time_ns, attributes)
     * tuples the worker reads only when it reads them (events_get); `events` caches that tuple
     * once the call ended, or holds what Python code assigned. */
    struct EventSlot *ev;
    Py_ssize_t ev_n, ev_cap;
} CallObject;

typedef struct EventSlot {
    PyObject *name;      /* strong (str) */
    PyObject *attrs;     /* strong, untracked tuple of (key, value) pairs, or NULL */
    int64_t ts;
} EventSlot;

static void
events_free(CallObject *self)
{
    for (Py_ssize_t i = 0; i < self->ev_n; i++) {
        Py_DECREF(self->ev[i].name);
        Py_XDECREF(self->ev[i].attrs);
    }
    PyMem_Free(self->ev);
    self->ev = NULL;
    self->ev_n = self->ev_cap = 0;
}

static PyTypeObject Call_Type;

static int
Call_traverse(CallObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->trace); Py_VISIT(self->fid); Py_VISIT(self->octx); Py_VISIT(self->prev);
    Py_VISIT(self->args); Py_VISIT(self->events); Py_VISIT(self->overlay); Py_VISIT(self->value);
    for (Py_ssize_t i = 0; i < self->ev_n; i++) {
        Py_VISIT(self->ev[i].name);
        Py_VISIT(self->ev[i].attrs);
    }
    return 0;
}

static int
Call_clear(CallObject *self)
{
    Py_CLEAR(self->trace); Py_CLEAR(self->fid); Py_CLEAR(self->octx); Py_CLEAR(self->prev);
    Py_CLEAR(self->args); Py_CLEAR(self->events); Py_CLEAR(self->overlay); Py_CLEAR(self->value);
    events_free(self);
    self->dropped = 0;
    return 0;
}

/*
 * Freed Calls, reused by enter(): a burst that fills the ring allocates its
 * Calls once, not once per burst (the allocator, and the page faults of
 * fresh arenas, are a large part of a call's cost).  The list keeps at most
 * as many Calls as the ring the hot path writes into holds (set_ring), so
 * it never holds more memory than a full ring does; CALL_FREELIST_MIN
 * without a ring.
 */
#define CALL_FREELIST_MIN 1024
static CallObject **call_freelist = NULL;
static Py_ssize_t call_numfree = 0, call_freelist_alloc = 0, call_freelist_max = CALL_FREELIST_MIN;

/* Room for one more freed Call (grows the list up to its bound). */
static int
call_freelist_room(void)
{
    if (call_numfree >= call_freelist_max)
        return 0;
    if (call_numfree < call_freelist_alloc)
        return 1;
    Py_ssize_t want = call_freelist_alloc ? call_freelist_alloc * 2 : CALL_FREELIST_MIN;
    if (want > call_freelist_max)
        want = call_freelist_max;
    CallObject **grown = PyMem_Realloc(call_freelist, (size_t)want * sizeof(CallObject *));
    if (grown == NULL)
        return 0;  /* no error set: the Call is simply freed */
    call_freelist = grown;
    call_freelist_alloc = want;
    return 1;
}

/* Bound the list by `n` Calls, freeing what is over. */
static void
call_freelist_bound(Py_ssize_t n)
{
    call_freelist_max = n > CALL_FREELIST_MIN ? n : CALL_FREELIST_MIN;
    while (call_numfree > call_freelist_max)
        PyObject_GC_Del(call_freelist[--call_numfree]);
}

static void
Call_dealloc(CallObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, Call_dealloc)  /* long caller chains must not overflow the C stack */
    Call_clear(self);
    if (Py_IS_TYPE(self, &Call_Type) && call_freelist_room())
        call_freelist[call_numfree++] = self;
    else
        PyObject_GC_Del(self);
    Py_TRASHCAN_END
}

static CallObject *
Call_alloc(void)
{
    if (call_numfree > 0) {
        CallObject *call = call_freelist[--call_numfree];
        _Py_NewReference((PyObject *)call);
        return call;
    }
    return PyObject_GC_New(CallObject, &Call_Type);
}

static Py_ssize_t
Call_len(PyObject *self)
{
    return TOKEN_LEN;
}

static PyObject *
obj_or_none(PyObject *o)
{
    return Py_NewRef(o ? o : Py_None);
}

static PyObject *events_get(CallObject *self);

static PyObject *
Call_item(CallObject *self, Py_ssize_t i)
{
    switch (i) {
    case T_SPAN_ID: return PyLong_FromUnsignedLongLong(self->span_id);
    case T_TRACE_ID: return obj_or_none(self->trace);
    case T_PARENT_ID: return PyLong_FromUnsignedLongLong(self->parent_id);
    case T_FID: return obj_or_none(self->fid);
    case T_START_NS: return PyLong_FromLongLong(self->start);
    case T_OTEL_CTX: return obj_or_none(self->octx);
    case T_PREV: return obj_or_none(self->prev);
    case T_ARGS: return obj_or_none(self->args);
    case T_EVENTS: return events_get(self);
    case T_OVERLAY: return obj_or_none(self->overlay);
    case T_LEVEL: return PyLong_FromLong(self->level);
    case T_FLAGS: return PyLong_FromLong(self->flags);
    case T_END_NS: return PyLong_FromLongLong(self->end);
    case T_STATUS: return PyLong_FromLong(self->status);
    case T_VALUE: return obj_or_none(self->value);
    }
    PyErr_SetString(PyExc_IndexError, "token index out of range");
    return NULL;
}

static int
Call_ass_item(CallObject *self, Py_ssize_t i, PyObject *v)
{
    PyObject **slot;
    switch (i) {
    case T_OTEL_CTX: slot = &self->octx; break;
    case T_PREV: slot = &self->prev; break;
    case T_ARGS: slot = &self->args; break;
    case T_EVENTS: slot = &self->events; break;
    case T_OVERLAY: slot = &self->overlay; break;
    case T_VALUE: slot = &self->value; break;
    default:
        PyErr_SetString(PyExc_TypeError, "this token field is read-only");
        return -1;
    }
    Py_XSETREF(*slot, (v == NULL || v == Py_None) ? NULL : Py_NewRef(v));
    if (i == T_EVENTS) {  /* what Python assigned replaces the hot path's events */
        events_free(self);
        self->dropped = 0;
    }
    return 0;
}

static PySequenceMethods Call_as_sequence = {
    .sq_length = Call_len,
    .sq_item = (ssizeargfunc)Call_item,
    .sq_ass_item = (ssizeobjargproc)Call_ass_item,
};

static PyTypeObject Call_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scope_otel.capture._speedups.Call",
    .tp_basicsize = sizeof(CallObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A recorded call (token and record); indexable like the pure-Python token list.",
    .tp_dealloc = (destructor)Call_dealloc,
    .tp_traverse = (traverseproc)Call_traverse,
    .tp_clear = (inquiry)Call_clear,
    .tp_as_sequence = &Call_as_sequence,
};

/* ===================================================================== Stack */

/*
 * The innermost call of one contextvars.Context.  The ContextVar holds a
 * Stack, set once per Context (not once per call: ContextVar.set allocates);
 * enter/exit then move `top`.  A Context that inherited another Context's
 * Stack (a new asyncio task, copy_context().run) gets its own Stack at its
 * first recorded call, starting from the inherited top at that moment.
 */
typedef struct {
    PyObject_HEAD
    PyObject *owner;   /* the Context this stack belongs to */
    PyObject *top;     /* innermost Call, the disabled marker, or NULL */
} StackObject;

static int
Stack_traverse(StackObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner); Py_VISIT(self->top);
    return 0;
}

static int
Stack_clear(StackObject *self)
{
    Py_CLEAR(self->owner); Py_CLEAR(self->top);
    return 0;
}

static void
Stack_dealloc(StackObject *self)
{
    PyObject_GC_UnTrack(self);
    Stack_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject Stack_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scope_otel.capture._speedups.Stack",
    .tp_basicsize = sizeof(StackObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)Stack_dealloc,
    .tp_traverse = (traverseproc)Stack_traverse,
    .tp_clear = (inquiry)Stack_clear,
};

/* =================================================================== HotPath */

typedef struct {
    PyObject_HEAD
    PyObject *levels, *rates, *flags;   /* lists indexed by fid */
    PyObject *params;                   /* list indexed by fid: tuple of parameter names */
    PyObject *cur;                      /* ContextVar holding a Stack */
    PyObject *disabled;
    PyObject *octx;                     /* ContextVar or callable */
    PyObject *root_of, *snap, *put, *on_error, *summarize;
    PyObject *last_ctx, *last_stack;    /* one-entry cache: Context -> its Stack */
    PyObject *oc_ctx, *oc_vars, *oc_val; /* one-entry cache: (Context, its variables) -> OTel context */
    uint64_t prefix, counter, rng;
    uint64_t unsampled;                 /* calls not recorded: their trace was sampled out (see root_of) */
    PyObject *span_key;                 /* set_roots(): the OTel context key of the current span, or NULL */
    uint64_t root_bound;                /* set_roots(): a new trace is recorded if its low 64 bits are below */
    int root_all;                       /* set_roots(): every new trace is recorded */
    Py_ssize_t max_events;              /* events kept per call (set_max_events) */
} HotPathObject;

static int
HotPath_init(HotPathObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"levels", "rates", "flags", "params", "cur", "disabled", "octx", "root_of",
                             "snap", "put", "prefix", "on_error", "summarize", NULL};
    PyObject *levels, *rates, *flags, *params, *cur, *disabled, *octx, *root_of, *snap, *put, *on_error;
    PyObject *summarize;
    unsigned long long prefix;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!OOOOOOKOO", kwlist,
                                     &PyList_Type, &levels, &PyList_Type, &rates, &PyList_Type, &flags,
                                     &PyList_Type, &params, &cur, &disabled, &octx, &root_of, &snap, &put,
                                     &prefix, &on_error, &summarize))
        return -1;
    if (!PyContextVar_CheckExact(cur)) {
        PyErr_SetString(PyExc_TypeError, "cur must be a ContextVar");
        return -1;
    }
    Py_XSETREF(self->levels, Py_NewRef(levels));
    Py_XSETREF(self->rates, Py_NewRef(rates));
    Py_XSETREF(self->flags, Py_NewRef(flags));
    Py_XSETREF(self->params, Py_NewRef(params));
    Py_XSETREF(self->cur, Py_NewRef(cur));
    Py_XSETREF(self->disabled, Py_NewRef(disabled));
    Py_XSETREF(self->octx, Py_NewRef(octx));
    Py_XSETREF(self->root_of, Py_NewRef(root_of));
    Py_XSETREF(self->snap, Py_NewRef(snap));
    Py_XSETREF(self->put, Py_NewRef(put));
    if (Py_IS_TYPE(put, &Ring_Type))
        call_freelist_bound(((RingObject *)put)->cap);
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    Py_XSETREF(self->summarize, Py_NewRef(summarize));
    Py_CLEAR(self->last_ctx);
    Py_CLEAR(self->last_stack);
    Py_CLEAR(self->oc_ctx);
    Py_CLEAR(self->oc_vars);
    Py_CLEAR(self->oc_val);
    self->prefix = (uint64_t)(prefix & 0xFFFFFFFFu) << 32;
    self->counter = 0;
    self->unsampled = 0;
    self->max_events = 128;
    self->rng = ((uint64_t)prefix * 0x9E3779B97F4A7C15ull) ^ (uint64_t)time(NULL) ^ 0x2545F4914F6CDD1Dull;
    if (self->rng == 0)
        self->rng = 88172645463325252ull;
    return 0;
}

static int
HotPath_traverse(HotPathObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->levels); Py_VISIT(self->rates); Py_VISIT(self->flags); Py_VISIT(self->params); Py_VISIT(self->cur);
    Py_VISIT(self->disabled); Py_VISIT(self->octx); Py_VISIT(self->root_of); Py_VISIT(self->snap);
    Py_VISIT(self->put); Py_VISIT(self->on_error); Py_VISIT(self->summarize); Py_VISIT(self->last_ctx); Py_VISIT(self->last_stack);
    Py_VISIT(self->oc_ctx); Py_VISIT(self->oc_vars); Py_VISIT(self->oc_val); Py_VISIT(self->span_key);
    return 0;
}

static int
HotPath_clear(HotPathObject *self)
{
    Py_CLEAR(self->levels); Py_CLEAR(self->rates); Py_CLEAR(self->flags); Py_CLEAR(self->params); Py_CLEAR(self->cur);
    Py_CLEAR(self->disabled); Py_CLEAR(self->octx); Py_CLEAR(self->root_of); Py_CLEAR(self->snap);
    Py_CLEAR(self->put); Py_CLEAR(self->on_error); Py_CLEAR(self->summarize); Py_CLEAR(self->last_ctx); Py_CLEAR(self->last_stack);
    Py_CLEAR(self->oc_ctx); Py_CLEAR(self->oc_vars); Py_CLEAR(self->oc_val); Py_CLEAR(self->span_key);
    return 0;
}

static void
HotPath_dealloc(HotPathObject *self)
{
    PyObject_GC_UnTrack(self);
    HotPath_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Report the pending exception to on_error and clear it. */
static void
report_error(HotPathObject *self)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        Py_XDECREF(type); Py_XDECREF(tb);
        return;
    }
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *r = PyObject_CallOneArg(self->on_error, value);
    if (r == NULL)
        PyErr_Clear();
    else
        Py_DECREF(r);
    Py_XDECREF(type); Py_DECREF(value); Py_XDECREF(tb);
}

/*
 * Wall-clock nanoseconds.  clock_gettime costs 20-60 ns here (two per call);
 * on x86-64 with an invariant TSC the hot path reads the TSC instead and
 * converts it with a scale and base that recalibrate() (called by the
 * processor's worker, off the hot path) keeps aligned with CLOCK_REALTIME.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

static int use_tsc = 0;
static double tsc_scale = 0.0;        /* ns per tick */
static int64_t base_ns = 0, first_ns = 0;
static uint64_t base_tsc = 0, first_tsc = 0;

static inline int64_t
clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t
now_ns(void)
{
#if HAVE_TSC
    if (use_tsc)
        return base_ns + (int64_t)((double)(int64_t)(__rdtsc() - base_tsc) * tsc_scale);
#endif
    return clock_ns();
}

/* Align the TSC conversion with CLOCK_REALTIME; the scale is measured over
 * the whole time since the first calibration, so it sharpens as time goes. */
static void
calibrate(void)
{
#if HAVE_TSC
    int64_t ns = clock_ns();
    uint64_t tsc = __rdtsc();
    if (first_tsc == 0) {
        first_ns = ns;
        first_tsc = tsc;
        /* ~2 ms of spinning gives a usable first scale */
        int64_t until = ns + 2000000;
        while ((ns = clock_ns()) < until)
            ;
        tsc = __rdtsc();
    }
    if (tsc <= first_tsc || ns <= first_ns) {
        use_tsc = 0;
        return;
    }
    double scale = (double)(ns - first_ns) / (double)(tsc - first_tsc);
    if (scale < 0.01 || scale > 100.0) {  /* not a sane TSC: keep the system clock */
        use_tsc = 0;
        return;
    }
    tsc_scale = scale;
    base_ns = ns;
    base_tsc = tsc;
    use_tsc = 1;
#endif
}

static PyObject *
speedups_recalibrate(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    calibrate();
    return PyBool_FromLong(use_tsc);
}

static PyObject *
speedups_now_ns(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(now_ns());
}

static PyObject *
speedups_use_system_clock(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    if (on)
        use_tsc = 0;
    else
        calibrate();
    Py_RETURN_NONE;
}

/*
 * The Stack of the current Context.  With own == 0 it may return an
 * inherited Stack (another Context's) for reading; with own == 1 it creates
 * this Context's Stack when needed.  Borrowed reference; NULL with an error
 * set on failure, or NULL without error when own == 0 and there is none.
 */
static StackObject *
current_stack_slow(HotPathObject *self, PyThreadState *ts, int own)
{
    PyObject *found = NULL;
    if (PyContextVar_Get(self->cur, NULL, &found) < 0)
        return NULL;
    PyObject *ctx = ts->context;  /* exists now: PyContextVar_Get creates it */
    StackObject *stack = NULL;
    if (found != NULL && Py_IS_TYPE(found, &Stack_Type)) {
        stack = (StackObject *)found;
        if (stack->owner == ctx) {
            Py_XSETREF(self->last_ctx, Py_XNewRef(ctx));
            Py_XSETREF(self->last_stack, Py_NewRef(found));
            Py_DECREF(found);  /* the Context keeps it alive */
            return stack;
        }
    }
    if (!own) {
        Py_XDECREF(found);  /* an inherited stack stays alive in its own Context */
        return stack;
    }
    StackObject *mine = PyObject_GC_New(StackObject, &Stack_Type);
    if (mine == NULL) {
        Py_XDECREF(found);
        return NULL;
    }
    mine->owner = Py_XNewRef(ctx);
    mine->top = stack ? Py_XNewRef(stack->top) : NULL;
    Py_XDECREF(found);
    PyObject_GC_Track(mine);
    PyObject *tok = PyContextVar_Set(self->cur, (PyObject *)mine);
    if (tok == NULL) {
        Py_DECREF(mine);
        return NULL;
    }
    Py_DECREF(tok);
    Py_XSETREF(self->last_ctx, Py_XNewRef(ctx));
    Py_XSETREF(self->last_stack, (PyObject *)mine);  /* our reference moves to the cache */
    return mine;
}

/* current_stack_slow with its common case inline: the cached Context's own Stack. */
static inline StackObject *
current_stack_ts(HotPathObject *self, PyThreadState *ts, int own)
{
    if (ts->context != NULL && ts->context == self->last_ctx)
        return (StackObject *)self->last_stack;
    return current_stack_slow(self, ts, own);
}

static inline StackObject *
current_stack(HotPathObject *self, int own)
{
    return current_stack_ts(self, THREAD_STATE(), own);
}

/* Make `top` (may be NULL for "no call") the innermost call of this Context. */
static inline int
set_top(HotPathObject *self, PyObject *top)
{
    StackObject *stack = current_stack(self, 1);
    if (stack == NULL)
        return -1;
    Py_XINCREF(top);
    Py_XSETREF(stack->top, top);
    return 0;
}

static inline int is_plain(PyObject *v);

/* A value safe to keep: plain immutables as they are, anything else via snap(). */
static PyObject *
snap_value(HotPathObject *self, PyObject *v)
{
    if (is_plain(v))
        return Py_NewRef(v);
    return PyObject_CallOneArg(self->snap, v);
}

static inline int
is_plain(PyObject *v)
{
    return v == Py_None || PyLong_CheckExact(v) || PyUnicode_CheckExact(v) || PyFloat_CheckExact(v) || PyBool_Check(v);
}

/* All values plain immutables (and all keys str): the dict can be kept as is. */
static int
all_plain(PyObject *d)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k) || !is_plain(v))
            return 0;
    }
    return 1;
}

/* The current OpenTelemetry context (new reference), or NULL with an error. */
static PyObject *
get_octx(HotPathObject *self, PyThreadState *ts)
{
    if (!PyContextVar_CheckExact(self->octx))
        return PyObject_CallNoArgs(self->octx);
#if HAVE_CTX_LAYOUT
    PyObject *ctx = ts->context;
    if (ctx != NULL && ctx == self->oc_ctx && CTX_VARS(ctx) == self->oc_vars)
        return Py_NewRef(self->oc_val);
#endif
    PyObject *v = NULL;
    if (PyContextVar_Get(self->octx, NULL, &v) < 0)
        return NULL;
    if (v == NULL)
        v = Py_NewRef(Py_None);
#if HAVE_CTX_LAYOUT
    ctx = ts->context;  /* still NULL in a thread that never used contextvars */
    if (ctx != NULL && PyContext_CheckExact(ctx)) {
        /* strong references: neither address can be reused while cached */
        Py_XSETREF(self->oc_ctx, Py_NewRef(ctx));
        Py_XSETREF(self->oc_vars, Py_XNewRef(CTX_VARS(ctx)));
        Py_XSETREF(self->oc_val, Py_NewRef(v));
    }
#endif
    return v;
}

static uint64_t
next_bits(HotPathObject *self)
{
    uint64_t x = self->rng;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    self->rng = x;
    return x;
}

static double
next_random(HotPathObject *self)
{
    uint64_t x = self->rng;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    self->rng = x;
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

/*
 * The arguments to keep for a call (new reference), or NULL with an error.
 * Either `call_args`, a dict given to enter(), or `values`, the values of
 * the parameters named at register() given to enter_params().  Plain values
 * are kept as they are; anything else goes through snap() with recording
 * disabled (a repr() must not record itself), which runs Python code:
 * *ran_python tells the caller to look the stack up again.
 */
static PyObject *
capture_args(HotPathObject *self, Py_ssize_t fid, PyObject *call_args, PyObject *const *values,
             Py_ssize_t nvalues, PyObject *caller, int *ran_python)
{
    PyObject *names = NULL;
    Py_ssize_t n = 0;
    int plain = 1;
    if (call_args != NULL) {
        if (PyDict_CheckExact(call_args) && all_plain(call_args))
            return Py_NewRef(call_args);  /* enter() owns the dict it is given */
        plain = 0;
    }
    else {
        names = PyList_GET_ITEM(self->params, fid);
        if (!PyTuple_Check(names)) {
            PyErr_SetString(PyExc_TypeError, "parameter names must be a tuple");
            return NULL;
        }
        n = PyTuple_GET_SIZE(names) < nvalues ? PyTuple_GET_SIZE(names) : nvalues;
        for (Py_ssize_t i = 0; i < n && plain; i++)
            plain = is_plain(values[i]);
    }
    PyObject *captured = PyDict_New();
    if (captured == NULL)
        return NULL;
    if (plain) {  /* parameter names are str: no Python code runs here */
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyDict_SetItem(captured, PyTuple_GET_ITEM(names, i), values[i]) < 0) {
                Py_DECREF(captured);
                return NULL;
            }
        }
        return captured;
    }
    *ran_python = 1;
    if (set_top(self, self->disabled) < 0) {
        Py_DECREF(captured);
        return NULL;
    }
    int rc = 0;
    if (call_args != NULL) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (rc == 0 && PyDict_Next(call_args, &pos, &k, &v)) {
            Py_INCREF(k); Py_INCREF(v);
            PyObject *kept = snap_value(self, v);
            rc = kept == NULL ? -1 : PyDict_SetItem(captured, k, kept);
            Py_XDECREF(kept); Py_DECREF(k); Py_DECREF(v);
        }
    }
    else {
        /* values[] are the caller's frame's locals: alive during this call */
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            PyObject *kept = snap_value(self, values[i]);
            rc = kept == NULL ? -1 : PyDict_SetItem(captured, PyTuple_GET_ITEM(names, i), kept);
            Py_XDECREF(kept);
        }
    }
    PyObject *t, *val, *tb;
    PyErr_Fetch(&t, &val, &tb);
    if (set_top(self, caller) < 0 && rc == 0)
        rc = -1;
    else
        PyErr_Restore(t, val, tb);
    if (rc < 0)
        Py_CLEAR(captured);
    return captured;
}

/*
 * enter() and enter_params(): push a new Call for function `fid_obj` and
 * return it (or None: not recorded).  Arguments come either as a dict
 * (`call_args`, NULL for none) or as parameter values (`values`).
 */
static PyObject *
do_enter(HotPathObject *self, PyObject *fid_obj, Py_ssize_t fid, PyObject *call_args,
         PyObject *const *values, Py_ssize_t nvalues)
{
    PyObject *octx = NULL, *trace = NULL, *captured = NULL;
    uint64_t parent_id = 0;
    int ran_python = 0;
    PyThreadState *ts = THREAD_STATE();

    if (fid < 0) {  /* not known yet: read it from fid_obj */
        fid = table_long(fid_obj);
        if (fid == -1 && PyErr_Occurred())
            goto error;
    }
    if (fid < 0 || fid >= PyList_GET_SIZE(self->levels) || fid >= PyList_GET_SIZE(self->rates)
        || fid >= PyList_GET_SIZE(self->flags) || fid >= PyList_GET_SIZE(self->params)) {
        PyErr_Format(PyExc_IndexError, "unknown function id %zd", fid);
        goto error;
    }
    long lvl = table_long(PyList_GET_ITEM(self->levels, fid));
    if (lvl == -1 && PyErr_Occurred())
        goto error;
    if (lvl == 0)
        Py_RETURN_NONE;
    double rate = table_double(PyList_GET_ITEM(self->rates, fid));
    if (rate == -1.0 && PyErr_Occurred())
        goto error;
    if (rate < 1.0 && next_random(self) >= rate)
        Py_RETURN_NONE;
    StackObject *stack = current_stack_ts(self, ts, 0);
    if (stack == NULL && PyErr_Occurred())
        goto error;
    PyObject *caller = stack ? stack->top : NULL;  /* borrowed */
    if (caller == self->disabled)
        Py_RETURN_NONE;
    if (caller != NULL && Py_IS_TYPE(caller, &Call_Type) && ((CallObject *)caller)->level == 0) {
        /* inside a trace that is not recorded: spans started in it are unsampled too (the overlay
         * says so), so nothing under it records, whatever the OTel context is now */
        self->unsampled++;
        Py_RETURN_NONE;
    }
    octx = get_octx(self, ts);
    if (octx == NULL)
        goto error;
    int unsampled = 0;
    if (caller != NULL && Py_IS_TYPE(caller, &Call_Type) && ((CallObject *)caller)->octx == octx) {
        trace = Py_NewRef(((CallObject *)caller)->trace);
        parent_id = ((CallObject *)caller)->span_id;
    }
    else if (self->span_key != NULL && PyDict_Check(octx)
             && PyDict_GetItemWithError(octx, self->span_key) == NULL && !PyErr_Occurred()) {
        /* No span in the context: a new trace, decided here as root_of would (set_roots) without a
         * Python call: a sampled-out one only needs 64 random bits, the ones that decide. */
        uint64_t lo = next_bits(self) | 1, hi = next_bits(self);
        if (self->root_all || lo < self->root_bound) {
            PyObject *h = PyLong_FromUnsignedLongLong(hi), *l = PyLong_FromUnsignedLongLong(lo);
            PyObject *shift = PyLong_FromLong(64);
            PyObject *hs = (h && shift) ? PyNumber_Lshift(h, shift) : NULL;
            trace = (hs && l) ? PyNumber_Or(hs, l) : NULL;
            Py_XDECREF(h); Py_XDECREF(l); Py_XDECREF(shift); Py_XDECREF(hs);
        }
        else {
            trace = PyLong_FromUnsignedLongLong(lo);
            unsampled = 1;
        }
        if (trace == NULL)
            goto error;
        parent_id = 0;
    }
    else {
        PyObject *root = PyObject_CallOneArg(self->root_of, octx);
        ran_python = 1;
        if (root == NULL)
            goto error;
        if (root == Py_None) {
            Py_DECREF(root);
            Py_DECREF(octx);
            Py_RETURN_NONE;
        }
        if (!PyTuple_Check(root) || PyTuple_GET_SIZE(root) < 2 || PyTuple_GET_SIZE(root) > 3) {
            Py_DECREF(root);
            PyErr_SetString(PyExc_TypeError,
                            "root_of must return (trace_id, parent_id), (trace_id, parent_id, False) or None");
            goto error;
        }
        /* (trace_id, parent_id, False): a trace sampled out as a whole.  The call is pushed as a
         * level-0 marker that is never emitted, so the calls under it are not recorded either. */
        unsampled = PyTuple_GET_SIZE(root) == 3;
        trace = Py_NewRef(PyTuple_GET_ITEM(root, 0));
        parent_id = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(root, 1));
        Py_DECREF(root);
        if (PyErr_Occurred())
            goto error;
        /* root_of ran Python code: the stack may have moved; read it again */
        stack = current_stack_ts(self, ts, 0);
        if (stack == NULL && PyErr_Occurred())
            goto error;
        caller = stack ? stack->top : NULL;
    }
    Py_XINCREF(caller);  /* keep it across the Python calls below */
    long flg = table_long(PyList_GET_ITEM(self->flags, fid));
    if (flg == -1 && PyErr_Occurred()) {
        Py_XDECREF(caller);
        goto error;
    }
    if (unsampled) {
        self->unsampled++;
        lvl = 0;
        flg = 0;
    }
    if ((flg & CAP_ARGS) && (call_args != NULL ? PyDict_Check(call_args) : (lvl > 1 && nvalues > 0))) {
        captured = capture_args(self, fid, call_args, values, nvalues, caller, &ran_python);
        if (captured == NULL) {
            Py_XDECREF(caller);
            goto error;
        }
    }
    CallObject *call = Call_alloc();
    if (call == NULL) {
        Py_XDECREF(caller);
        goto error;
    }
    self->counter++;
    call->span_id = self->prefix | (self->counter & 0xFFFFFFFFu);
    call->parent_id = parent_id;
    call->start = now_ns();
    call->end = 0;
    call->level = lvl;
    call->flags = flg;
    call->status = 0;
    call->dropped = 0;
    call->dropped_at = 0;
    call->ev = NULL;
    call->ev_n = call->ev_cap = 0;
    call->trace = trace;
    call->fid = Py_NewRef(fid_obj);
    call->octx = octx;
    call->prev = caller;        /* our reference moves in */
    call->args = captured;
    call->events = NULL;
    call->overlay = NULL;
    call->value = NULL;
    /* Not tracked by the cyclic GC: a running call refers to its caller, the
     * OTel context and snapshots, none of which can lead back to it (the
     * same holds once it ended: an exception is kept as a summary of
     * immutable values, never the exception object). */
    if (!ran_python && stack != NULL && stack->owner == ts->context) {
        /* common case: this Context's own stack, no Python code ran since */
        Py_INCREF(call);
        Py_XSETREF(stack->top, (PyObject *)call);
    }
    else if (set_top(self, (PyObject *)call) < 0) {
        Py_DECREF(call);
        report_error(self);
        Py_RETURN_NONE;
    }
    return (PyObject *)call;

error:
    Py_XDECREF(octx); Py_XDECREF(trace); Py_XDECREF(captured);
    report_error(self);
    Py_RETURN_NONE;
}

static PyObject *
HotPath_enter(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "enter(fid, args=None)");
        report_error(self);
        Py_RETURN_NONE;
    }
    PyObject *call_args = nargs > 1 && args[1] != Py_None ? args[1] : NULL;
    return do_enter(self, args[0], -1, call_args, NULL, 0);
}

static PyObject *
HotPath_enter_params(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "enter_params(fid, *values)");
        report_error(self);
        Py_RETURN_NONE;
    }
    return do_enter(self, args[0], -1, NULL, args + 1, nargs - 1);
}

/* An ended call's events become a tuple: the record then holds nothing the
 * cyclic GC must track (a tuple of untracked values is untracked at the
 * next collection; a list never is). */
/* CPython's own rule for tuples (_PyTuple_MaybeUntrack), applied now and
 * to nested tuples first: a tuple holding only objects the collector does not
 * track needs no tracking.  The collector would do it, one nesting level per
 * collection; records must leave nothing behind after one. */
static void
untrack_tuples(PyObject *t, int depth)
{
    if (!PyTuple_CheckExact(t) || !PyObject_GC_IsTracked(t))
        return;
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(t, i);
        if (depth > 0 && PyTuple_CheckExact(item))
            untrack_tuples(item, depth - 1);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(t, i);
        if (PyObject_IS_GC(item) && (!PyTuple_CheckExact(item) || PyObject_GC_IsTracked(item)))
            return;
    }
    PyObject_GC_UnTrack(t);
}

static PyObject *exc_fallback;  /* see exceptions */
static PyObject *s_ev_suspend = NULL, *s_ev_resume = NULL, *s_ev_state = NULL, *s_ev_dropped = NULL;
static PyObject *s_key_target = NULL, *s_key_value = NULL, *s_key_dropped = NULL;  /* interned at init */

static int
freeze_events(CallObject *call)
{
    if (call->events == NULL || !PyList_CheckExact(call->events))
        return 0;
    if (call->dropped) {  /* the one last event that counts what add_event left out */
        PyObject *ev = Py_BuildValue("(OL((OK)))", s_ev_dropped, (long long)call->dropped_at, s_key_dropped,
                                     (unsigned long long)call->dropped);
        if (ev == NULL || PyList_Append(call->events, ev) < 0) {
            Py_XDECREF(ev);
            return -1;
        }
        Py_DECREF(ev);
        call->dropped = 0;
    }
    PyObject *frozen = PyList_AsTuple(call->events);
    if (frozen == NULL)
        return -1;
    untrack_tuples(frozen, 4);  /* events, (name, ts, attrs), attrs, (key, value) */
    Py_SETREF(call->events, frozen);
    return 0;
}

static int
emit(HotPathObject *self, PyObject *record)
{
    if (Py_IS_TYPE(self->put, &Ring_Type)) {
        ring_put((RingObject *)self->put, record);
        return 0;
    }
    PyObject *r = PyObject_CallOneArg(self->put, record);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/*
 * exit(token, value=None) -> value: the call returned `value`.  Returning it
 * lets instrumented code end a call inside its return statement
 * (`return exit(t, x)`).  A token that already ended is left alone, so an
 * exception that arrives after that point (a signal handler's) cannot end
 * the call twice.
 */
static PyObject *
HotPath_exit(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "exit(token, value=None)");
        report_error(self);
        Py_RETURN_NONE;
    }
    PyObject *token = args[0];
    PyObject *value = nargs > 1 ? args[1] : Py_None;
    if (token == Py_None)
        return Py_NewRef(value);
    if (!Py_IS_TYPE(token, &Call_Type)) {
        PyErr_SetString(PyExc_TypeError, "not a scope-otel token");
        goto error;
    }
    CallObject *call = (CallObject *)token;
    if (call->end != 0)
        return Py_NewRef(value);
    if (call->level == 0) {  /* the marker of a trace that is not recorded: only leaves the stack */
        call->end = 1;
        if (set_top(self, call->prev) < 0)
            goto error;
        return Py_NewRef(value);
    }
    call->end = now_ns();
    if (call->end < call->start)  /* a recalibration stepped the clock back */
        call->end = call->start;
    if (value != Py_None && (call->flags & CAP_RETURN)) {
        PyObject *kept;
        if (set_top(self, self->disabled) < 0)
            goto error;
        kept = snap_value(self, value);
        if (kept == NULL) {
            PyObject *t, *val, *tb;
            PyErr_Fetch(&t, &val, &tb);
            set_top(self, call->prev);
            PyErr_Restore(t, val, tb);
            goto error;
        }
        Py_XSETREF(call->value, kept);
    }
    if (set_top(self, call->prev) < 0)
        goto error;
    call->status = 0;
    if (freeze_events(call) < 0)
        goto error;
    /* Still untracked (see do_enter): an ended call holds only snapshots,
     * its caller and OTel contexts, so the cyclic GC need not walk the
     * thousands of them waiting in the ring. */
    if (emit(self, token) < 0)
        goto error;
    return Py_NewRef(value);
error:
    report_error(self);
    return Py_NewRef(value);
}

static PyObject *
HotPath_exception(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "exception(token, exc)");
        report_error(self);
        Py_RETURN_NONE;
    }
    PyObject *token = args[0];
    if (token == Py_None)
        Py_RETURN_NONE;
    if (!Py_IS_TYPE(token, &Call_Type)) {
        PyErr_SetString(PyExc_TypeError, "not a scope-otel token");
        report_error(self);
        Py_RETURN_NONE;
    }
    CallObject *call = (CallObject *)token;
    if (call->end != 0)  /* already ended (see exit) */
        Py_RETURN_NONE;
    if (call->level == 0) {  /* a marker (see exit): the exception is not kept */
        call->end = 1;
        if (set_top(self, call->prev) < 0)
            goto error;
        Py_RETURN_NONE;
    }
    call->end = now_ns();
    if (call->end < call->start)
        call->end = call->start;
    if (set_top(self, call->prev) < 0)
        goto error;
    call->status = 1;
    /* the record keeps a summary (immutable values), never the exception:
     * its traceback holds every frame and local it passed through */
    PyObject *summary = PyObject_CallOneArg(self->summarize, args[1]);
    if (summary == NULL) {  /* counted; the record says so rather than going missing */
        report_error(self);
        summary = Py_NewRef(exc_fallback);
    }
    untrack_tuples(summary, 8);  /* the summary, its frames, chained summaries */
    Py_XSETREF(call->value, summary);
    if (freeze_events(call) < 0)
        goto error;
    if (emit(self, token) < 0)
        goto error;
    Py_RETURN_NONE;
error:
    report_error(self);
    Py_RETURN_NONE;
}

/*
 * Events of a running call: (name, time_ns, attributes as a tuple of (key, value) pairs or None),
 * only immutable values, so that the record holds nothing the cyclic GC keeps tracking once the
 * list becomes a tuple at exit.  A call keeps its first max_events events; past them it only counts
 * (a generator that yields a million times must not hold two million events until it ends), and
 * freeze_events adds one last event, scope.events_dropped, with the count.  Ended calls and the
 * markers of unsampled traces take no events.  `attrs` is borrowed (NULL: None).
 */
static int
add_event(HotPathObject *self, CallObject *call, PyObject *name, PyObject *attrs)
{
    if (call->end != 0 || call->level == 0)
        return 0;
    if (call->events != NULL) {  /* a list Python code assigned: appended to, within the limit */
        if (!PyList_CheckExact(call->events))
            return 0;
        if (PyList_GET_SIZE(call->events) >= self->max_events) {
            if (call->dropped++ == 0)
                call->dropped_at = now_ns();
            return 0;
        }
        PyObject *ts = PyLong_FromLongLong(now_ns());
        PyObject *ev = ts ? PyTuple_Pack(3, name, ts, attrs ? attrs : Py_None) : NULL;
        Py_XDECREF(ts);
        int rc = ev ? PyList_Append(call->events, ev) : -1;
        Py_XDECREF(ev);
        return rc;
    }
    if (call->ev_n >= self->max_events) {
        if (call->dropped++ == 0)
            call->dropped_at = now_ns();
        return 0;
    }
    if (call->ev_n == call->ev_cap) {
        Py_ssize_t want = call->ev_cap ? call->ev_cap * 2 : 8;
        if (want > self->max_events)
            want = self->max_events;
        EventSlot *grown = PyMem_Realloc(call->ev, (size_t)want * sizeof(EventSlot));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        call->ev = grown;
        call->ev_cap = want;
    }
    if (attrs != NULL)
        untrack_tuples(attrs, 2);  /* ((key, value), ...) of str and snapshots */
    EventSlot *slot = &call->ev[call->ev_n++];
    slot->name = Py_NewRef(name);
    slot->attrs = Py_XNewRef(attrs);
    slot->ts = now_ns();
    return 0;
}

/* A call's events as the worker reads them: (name, time_ns, attributes) tuples, the dropped count
 * last; a tuple (cached, untracked) once the call ended, a fresh list while it runs; None if none. */
static PyObject *
events_get(CallObject *self)
{
    if (self->events != NULL)
        return Py_NewRef(self->events);
    if (self->ev_n == 0 && self->dropped == 0)
        Py_RETURN_NONE;
    int ended = self->end != 0;
    Py_ssize_t n = self->ev_n + (self->dropped ? 1 : 0);
    PyObject *out = ended ? PyTuple_New(n) : PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev;
        if (i < self->ev_n)
            ev = Py_BuildValue("(OLO)", self->ev[i].name, (long long)self->ev[i].ts,
                               self->ev[i].attrs ? self->ev[i].attrs : Py_None);
        else
            ev = Py_BuildValue("(OL((OK)))", s_ev_dropped, (long long)self->dropped_at, s_key_dropped,
                               (unsigned long long)self->dropped);
        if (ev == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        if (ended)
            PyTuple_SET_ITEM(out, i, ev);
        else
            PyList_SET_ITEM(out, i, ev);
    }
    if (ended) {
        untrack_tuples(out, 4);  /* events, (name, ts, attrs), attrs, (key, value) */
        self->events = Py_NewRef(out);
        events_free(self);
        self->dropped = 0;
    }
    return out;
}

static CallObject *
as_call(PyObject *token)
{
    if (Py_IS_TYPE(token, &Call_Type))
        return (CallObject *)token;
    PyErr_SetString(PyExc_TypeError, "not a scope-otel token");
    return NULL;
}

/* suspend(token): the generator or coroutine of `token` leaves the stack (yield). */
static PyObject *
HotPath_suspend(HotPathObject *self, PyObject *token)
{
    if (token == Py_None)
        Py_RETURN_NONE;
    CallObject *call = as_call(token);
    if (call == NULL || set_top(self, call->prev) < 0 || add_event(self, call, s_ev_suspend, NULL) < 0)
        report_error(self);
    Py_RETURN_NONE;
}

/* resume(token): the generator or coroutine of `token` is re-entered; its caller is whoever is
 * innermost now, and SDK spans started inside see the OpenTelemetry context current now. */
static PyObject *
HotPath_resume(HotPathObject *self, PyObject *token)
{
    if (token == Py_None)
        Py_RETURN_NONE;
    CallObject *call = as_call(token);
    if (call == NULL)
        goto error;
    PyThreadState *ts = THREAD_STATE();
    PyObject *octx = get_octx(self, ts);
    if (octx == NULL)
        goto error;
    if (call->octx != octx) {
        PyObject *old_ctx = call->octx, *old_overlay = call->overlay;
        call->octx = octx;  /* our reference moves in */
        call->overlay = NULL;
        Py_XDECREF(old_ctx);
        Py_XDECREF(old_overlay);
    }
    else
        Py_DECREF(octx);
    StackObject *stack = current_stack_ts(self, ts, 1);
    if (stack == NULL)
        goto error;
    PyObject *top = stack->top;
    if (top != token) {  /* every pointer moves before anything is released */
        PyObject *old_prev = call->prev;
        call->prev = Py_XNewRef(top);
        stack->top = Py_NewRef(token);
        Py_XDECREF(top);  /* the stack's reference, now the call's prev holds one */
        Py_XDECREF(old_prev);
    }
    if (add_event(self, call, s_ev_resume, NULL) < 0)
        goto error;
    Py_RETURN_NONE;
error:
    report_error(self);
    Py_RETURN_NONE;
}

/* state_change(token, target, value): `target` (e.g. "self.total") was assigned `value` in the
 * call; kept as an event at full (CAP_STATE), the value snapshotted now with recording disabled. */
static PyObject *
hot_state_change(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "state_change(token, target, value)");
        goto error;
    }
    if (args[0] == Py_None)
        Py_RETURN_NONE;
    CallObject *call = as_call(args[0]);
    if (call == NULL)
        goto error;
    if (!(call->flags & CAP_STATE) || call->end != 0 || call->level == 0)
        Py_RETURN_NONE;
    PyObject *kept;
    if (is_plain(args[2]))
        kept = Py_NewRef(args[2]);
    else {
        StackObject *stack = current_stack(self, 0);
        if (stack == NULL && PyErr_Occurred())
            goto error;
        PyObject *saved = Py_XNewRef(stack ? stack->top : NULL);
        if (set_top(self, self->disabled) < 0) {
            Py_XDECREF(saved);
            goto error;
        }
        kept = PyObject_CallOneArg(self->snap, args[2]);
        PyObject *t, *val, *tb;
        PyErr_Fetch(&t, &val, &tb);
        int rc = set_top(self, saved);
        Py_XDECREF(saved);
        if (rc < 0) {
            Py_XDECREF(t); Py_XDECREF(val); Py_XDECREF(tb); Py_XDECREF(kept);
            goto error;
        }
        PyErr_Restore(t, val, tb);
        if (kept == NULL)
            goto error;
    }
    PyObject *attrs = Py_BuildValue("((OO)(OO))", s_key_target, args[1], s_key_value, kept);
    Py_DECREF(kept);
    if (attrs == NULL)
        goto error;
    int rc = add_event(self, call, s_ev_state, attrs);
    Py_DECREF(attrs);
    if (rc < 0)
        goto error;
    Py_RETURN_NONE;
error:
    report_error(self);
    Py_RETURN_NONE;
}

/* event(token, name, attrs): any other event of a running call (messages sent and received). */
static PyObject *
HotPath_event(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "event(token, name, attrs)");
        goto error;
    }
    if (args[0] == Py_None)
        Py_RETURN_NONE;
    CallObject *call = as_call(args[0]);
    if (call == NULL || add_event(self, call, args[1], args[2] == Py_None ? NULL : args[2]) < 0)
        goto error;
    Py_RETURN_NONE;
error:
    report_error(self);
    Py_RETURN_NONE;
}

static PyObject *
HotPath_set_max_events(HotPathObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    self->max_events = n < 0 ? 0 : n;
    Py_RETURN_NONE;
}

static PyObject *
HotPath_current(HotPathObject *self, PyObject *Py_UNUSED(ignored))
{
    StackObject *stack = current_stack(self, 0);
    if (stack == NULL && PyErr_Occurred())
        return NULL;
    return obj_or_none(stack ? stack->top : NULL);
}

static PyObject *
HotPath_set_current(HotPathObject *self, PyObject *top)
{
    if (set_top(self, top == Py_None ? NULL : top) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
HotPath_set_ring(HotPathObject *self, PyObject *put)
{
    if (Py_IS_TYPE(put, &Ring_Type))
        call_freelist_bound(((RingObject *)put)->cap);
    Py_XSETREF(self->put, Py_NewRef(put));
    Py_RETURN_NONE;
}

static PyObject *
HotPath_reseed(HotPathObject *self, PyObject *arg)
{
    unsigned long long prefix = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred())
        return NULL;
    self->prefix = (uint64_t)(prefix & 0xFFFFFFFFu) << 32;
    self->counter = 0;
    self->unsampled = 0;  /* after fork: the child counts its own */
    self->rng ^= (uint64_t)prefix * 0x9E3779B97F4A7C15ull;
    if (self->rng == 0)
        self->rng = 88172645463325252ull;
    Py_RETURN_NONE;
}

static PyObject *HotPath_probe(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs);

static PyObject *
HotPath_set_roots(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "set_roots(span_key, bound, every)");
        return NULL;
    }
    uint64_t bound = PyLong_AsUnsignedLongLong(args[1]);
    if (bound == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    int every = PyObject_IsTrue(args[2]);
    if (every < 0)
        return NULL;
    Py_XSETREF(self->span_key, args[0] == Py_None ? NULL : Py_NewRef(args[0]));
    self->root_bound = bound;
    self->root_all = every;
    Py_RETURN_NONE;
}

static PyObject *
HotPath_unsampled(HotPathObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(self->unsampled);
}

static PyMethodDef HotPath_methods[] = {
    {"enter", (PyCFunction)(void (*)(void))HotPath_enter, METH_FASTCALL, "enter(fid, args=None) -> token | None"},
    {"enter_params", (PyCFunction)(void (*)(void))HotPath_enter_params, METH_FASTCALL,
     "enter_params(fid, *values) -> token | None: values of the parameters named at register()"},
    {"exit", (PyCFunction)(void (*)(void))HotPath_exit, METH_FASTCALL, "exit(token, value=None) -> value"},
    {"exception", (PyCFunction)(void (*)(void))HotPath_exception, METH_FASTCALL, "exception(token, exc)"},
    {"suspend", (PyCFunction)HotPath_suspend, METH_O, "suspend(token): the generator of token leaves the stack."},
    {"resume", (PyCFunction)HotPath_resume, METH_O, "resume(token): the generator of token is re-entered."},
    {"state_change", (PyCFunction)(void (*)(void))hot_state_change, METH_FASTCALL,
     "state_change(token, target, value): an assignment seen during the call (kept at full)."},
    {"event", (PyCFunction)(void (*)(void))HotPath_event, METH_FASTCALL,
     "event(token, name, attrs): an event of a running call (attrs: tuple of (key, value) pairs or None)."},
    {"set_max_events", (PyCFunction)HotPath_set_max_events, METH_O,
     "Events kept per call; past them one last event counts the rest."},
    {"current", (PyCFunction)HotPath_current, METH_NOARGS, "The innermost call of this context (or the disabled marker, or None)."},
    {"set_current", (PyCFunction)HotPath_set_current, METH_O, "Make a token (or None, or the disabled marker) the innermost call."},
    {"set_ring", (PyCFunction)HotPath_set_ring, METH_O, "Write records into a Ring (or through a callable)."},
    {"reseed", (PyCFunction)HotPath_reseed, METH_O, "New span-id prefix and counter."},
    {"probe", (PyCFunction)(void (*)(void))HotPath_probe, METH_FASTCALL,
     "probe(fid, sup=None) -> Probe: enter/exit/exception bound to one function."},
    {"set_roots", (PyCFunction)(void (*)(void))HotPath_set_roots, METH_FASTCALL,
     "set_roots(span_key, bound, every): a call with no recorded caller and no span under span_key in its "
     "OTel context starts a new trace without calling root_of: recorded if every or the trace id's low 64 "
     "bits are below bound, else sampled out whole (span_key None: always root_of)."},
    {"unsampled", (PyCFunction)HotPath_unsampled, METH_NOARGS,
     "Calls not recorded because their trace was sampled out as a whole (markers included)."},
    {NULL}
};

static PyTypeObject HotPath_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scope_otel.capture._speedups.HotPath",
    .tp_basicsize = sizeof(HotPathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "enter/exit/exception of the capture runtime (C twin of _pyhot.HotPath).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HotPath_init,
    .tp_dealloc = (destructor)HotPath_dealloc,
    .tp_traverse = (traverseproc)HotPath_traverse,
    .tp_clear = (inquiry)HotPath_clear,
    .tp_methods = HotPath_methods,
};

/* ===================================================================== Probe */

/*
 * One instrumented function's calls, bound to its hot path: rewritten code
 * calls probe.enter(*values), probe.exit(token, value) and
 * probe.exception(token, exc), which are HotPath.enter_params(fid, ...),
 * exit and exception.  A method call on a module global costs what a call
 * of a module global function costs, and the module's namespace gains no
 * callable (code that lists a module's callables sees nothing new).
 */
typedef struct {
    PyObject_HEAD
    HotPathObject *hot;
    PyObject *fid;
    PyObject *sup;         /* the rewrite's helpers (or None) */
    Py_ssize_t fid_value;  /* >= 0 */
} ProbeObject;

static int
Probe_traverse(ProbeObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->hot); Py_VISIT(self->fid); Py_VISIT(self->sup);
    return 0;
}

static int
Probe_clear(ProbeObject *self)
{
    Py_CLEAR(self->hot); Py_CLEAR(self->fid); Py_CLEAR(self->sup);
    return 0;
}

static void
Probe_dealloc(ProbeObject *self)
{
    PyObject_GC_UnTrack(self);
    Probe_clear(self);
    PyObject_GC_Del(self);
}

static PyObject *
Probe_enter(ProbeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return do_enter(self->hot, self->fid, self->fid_value, NULL, args, nargs);
}

static PyObject *
Probe_exit(ProbeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return HotPath_exit(self->hot, args, nargs);
}

static PyObject *
Probe_exception(ProbeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return HotPath_exception(self->hot, args, nargs);
}

static PyObject *
Probe_suspend(ProbeObject *self, PyObject *token)
{
    return HotPath_suspend(self->hot, token);
}

static PyObject *
Probe_resume(ProbeObject *self, PyObject *token)
{
    return HotPath_resume(self->hot, token);
}

static PyObject *
Probe_state_change(ProbeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return hot_state_change(self->hot, args, nargs);
}

static PyObject *hot_delegate(HotPathObject *hot, PyObject *const *args, Py_ssize_t nargs);

static PyObject *
Probe_delegate(ProbeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return hot_delegate(self->hot, args, nargs);
}

static PyObject *
Probe_get_fid(ProbeObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(self->fid);
}

static PyMethodDef Probe_methods[] = {
    {"enter", (PyCFunction)(void (*)(void))Probe_enter, METH_FASTCALL, "enter(*values) -> token | None"},
    {"exit", (PyCFunction)(void (*)(void))Probe_exit, METH_FASTCALL, "exit(token, value=None) -> value"},
    {"exception", (PyCFunction)(void (*)(void))Probe_exception, METH_FASTCALL, "exception(token, exc)"},
    {"suspend", (PyCFunction)Probe_suspend, METH_O, "suspend(token)"},
    {"resume", (PyCFunction)Probe_resume, METH_O, "resume(token)"},
    {"state_change", (PyCFunction)(void (*)(void))Probe_state_change, METH_FASTCALL,
     "state_change(token, target, value)"},
    {"delegate", (PyCFunction)(void (*)(void))Probe_delegate, METH_FASTCALL,
     "delegate(token, iterable): what a rewritten yield from delegates to."},
    {NULL}
};

static PyObject *
Probe_get_sup(ProbeObject *self, void *Py_UNUSED(c))
{
    return obj_or_none(self->sup);
}

/* The function's current level code (the runtime's LEVELS[fid]). */
static PyObject *
Probe_get_level(ProbeObject *self, void *Py_UNUSED(c))
{
    PyObject *levels = self->hot->levels;
    if (levels == NULL || self->fid_value >= PyList_GET_SIZE(levels)) {
        PyErr_SetString(PyExc_IndexError, "unknown function id");
        return NULL;
    }
    return Py_NewRef(PyList_GET_ITEM(levels, self->fid_value));
}

static PyGetSetDef Probe_getset[] = {
    {"fid", (getter)Probe_get_fid, NULL, "the function id", NULL},
    {"sup", (getter)Probe_get_sup, NULL, "the helpers given to probe()", NULL},
    {"level", (getter)Probe_get_level, NULL, "the function's current level code", NULL},
    {NULL}
};

static PyTypeObject Probe_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scope_otel.capture._speedups.Probe",
    .tp_basicsize = sizeof(ProbeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "enter/exit/exception of one registered function (C twin of _pyhot.Probe).",
    .tp_dealloc = (destructor)Probe_dealloc,
    .tp_traverse = (traverseproc)Probe_traverse,
    .tp_clear = (inquiry)Probe_clear,
    .tp_methods = Probe_methods,
    .tp_getset = Probe_getset,
};

static PyObject *
HotPath_probe(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "probe(fid, sup=None)");
        return NULL;
    }
    PyObject *fid = args[0];
    PyObject *sup = nargs > 1 && args[1] != Py_None ? args[1] : NULL;
    if (!PyLong_CheckExact(fid)) {
        PyErr_SetString(PyExc_TypeError, "probe(fid): fid must be an int");
        return NULL;
    }
    Py_ssize_t value = PyLong_AsSsize_t(fid);
    if (value == -1 && PyErr_Occurred())
        return NULL;
    if (value < 0) {
        PyErr_SetString(PyExc_ValueError, "probe(fid): fid must not be negative");
        return NULL;
    }
    ProbeObject *probe = PyObject_GC_New(ProbeObject, &Probe_Type);
    if (probe == NULL)
        return NULL;
    probe->hot = (HotPathObject *)Py_NewRef(self);
    probe->fid = Py_NewRef(fid);
    probe->sup = Py_XNewRef(sup);
    probe->fid_value = value;
    PyObject_GC_Track(probe);
    return (PyObject *)probe;
}

/* ================================================================ Delegation */

/*
 * `yield from x` in a rewritten generator is `yield from probe.delegate(token, x)`: this iterator
 * hands every value of x over, reporting the delegating generator's call suspended while the
 * value is out (resume before x runs again, suspend after it yields), so calls made by x are
 * children of the delegating call and everything the consumer does in between is not.  It is
 * C: no frame is added between the delegating generator and x (recursion depth and tracebacks as
 * written), and a value costs two C calls instead of PEP 380's expansion in bytecode.  send,
 * throw and close follow PEP 380: send(None) is next(), an iterator without throw() gets the
 * exception raised in the delegating generator, close() closes x when it can.
 */
typedef struct {
    PyObject_HEAD
    HotPathObject *hot;
    PyObject *token;
    PyObject *sub;       /* iter(x) */
    int suspended;       /* a value is out: resume before x runs again */
} DelegationObject;

static PyTypeObject Delegation_Type;

static int
Delegation_traverse(DelegationObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->hot); Py_VISIT(self->token); Py_VISIT(self->sub);
    return 0;
}

static int
Delegation_clear(DelegationObject *self)
{
    Py_CLEAR(self->hot); Py_CLEAR(self->token); Py_CLEAR(self->sub);
    return 0;
}

static void
Delegation_dealloc(DelegationObject *self)
{
    PyObject_GC_UnTrack(self);
    Delegation_clear(self);
    PyObject_GC_Del(self);
}

static void
deleg_resume(DelegationObject *self)
{
    if (self->suspended) {
        self->suspended = 0;
        Py_DECREF(HotPath_resume(self->hot, self->token));  /* reports its own errors, returns None */
    }
}

static PyObject *
deleg_out(DelegationObject *self, PyObject *value)
{
    self->suspended = 1;
    Py_DECREF(HotPath_suspend(self->hot, self->token));
    return value;
}

static PyObject *
deleg_step(DelegationObject *self, PyObject *arg)
{
    if (self->sub == NULL) {
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    deleg_resume(self);
    PyObject *res = NULL;
    PySendResult r = PyIter_Send(self->sub, arg, &res);
    if (r == PYGEN_NEXT)
        return deleg_out(self, res);
    if (r == PYGEN_RETURN) {  /* x returned: its value is what `yield from` evaluates to */
        if (res == Py_None)
            PyErr_SetNone(PyExc_StopIteration);
        else {
            PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, res);
            if (stop != NULL) {
                PyErr_SetObject(PyExc_StopIteration, stop);
                Py_DECREF(stop);
            }
        }
        Py_DECREF(res);
    }
    return NULL;
}

static PyObject *
Delegation_next(DelegationObject *self)
{
    return deleg_step(self, Py_None);
}

static PyObject *
Delegation_send(DelegationObject *self, PyObject *arg)
{
    return deleg_step(self, arg);
}

static PyObject *
Delegation_throw(DelegationObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw(typ[, val[, tb]])");
        return NULL;
    }
    deleg_resume(self);
    PyObject *meth = self->sub ? PyObject_GetAttrString(self->sub, "throw") : NULL;
    if (meth == NULL) {
        if (self->sub != NULL && !PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        /* no throw(): the exception is raised in the delegating generator, as given */
        PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None, *tb = nargs > 2 ? args[2] : Py_None;
        if (PyExceptionInstance_Check(typ)) {
            if (tb != Py_None && PyException_SetTraceback(typ, tb) < 0)
                return NULL;
            PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
        }
        else if (PyExceptionClass_Check(typ)) {
            PyErr_SetObject(typ, val == Py_None ? NULL : val);
            if (tb != Py_None && PyTraceBack_Check(tb)) {
                PyObject *t, *v, *old_tb;
                PyErr_Fetch(&t, &v, &old_tb);
                PyErr_NormalizeException(&t, &v, &old_tb);
                if (v != NULL)
                    PyException_SetTraceback(v, tb);
                Py_XDECREF(old_tb);
                PyErr_Restore(t, v, Py_NewRef(tb));
            }
        }
        else
            PyErr_SetString(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException");
        return NULL;
    }
    PyObject *res = PyObject_Vectorcall(meth, args, nargs, NULL);
    Py_DECREF(meth);
    if (res == NULL)
        return NULL;  /* StopIteration carries x's return value to the delegating generator */
    return deleg_out(self, res);
}

static PyObject *
Delegation_close(DelegationObject *self, PyObject *Py_UNUSED(ignored))
{
    deleg_resume(self);
    if (self->sub == NULL)
        Py_RETURN_NONE;
    PyObject *meth = PyObject_GetAttrString(self->sub, "close");
    if (meth == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *res = PyObject_CallNoArgs(meth);
    Py_DECREF(meth);
    return res;
}

static PyMethodDef Delegation_methods[] = {
    {"send", (PyCFunction)Delegation_send, METH_O, "send(value): the next value of the delegation."},
    {"throw", (PyCFunction)(void (*)(void))Delegation_throw, METH_FASTCALL, "throw(typ[, val[, tb]])"},
    {"close", (PyCFunction)Delegation_close, METH_NOARGS, "close()"},
    {NULL}
};

static PyTypeObject Delegation_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scope_otel.capture._speedups.Delegation",
    .tp_basicsize = sizeof(DelegationObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "yield from in a rewritten generator, reporting suspend/resume around each value.",
    .tp_dealloc = (destructor)Delegation_dealloc,
    .tp_traverse = (traverseproc)Delegation_traverse,
    .tp_clear = (inquiry)Delegation_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Delegation_next,
    .tp_methods = Delegation_methods,
};

/* delegate(token, x): iter(x) when the call is not recorded, else a Delegation over it. */
static PyObject *
hot_delegate(HotPathObject *hot, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "delegate(token, iterable)");
        return NULL;
    }
    PyObject *sub = PyObject_GetIter(args[1]);  /* as yield from does: its TypeError is the program's */
    if (sub == NULL || args[0] == Py_None || !Py_IS_TYPE(args[0], &Call_Type))
        return sub;
    DelegationObject *d = PyObject_GC_New(DelegationObject, &Delegation_Type);
    if (d == NULL) {
        Py_DECREF(sub);
        PyErr_Clear();
        return PyObject_GetIter(args[1]);
    }
    d->hot = (HotPathObject *)Py_NewRef(hot);
    d->token = Py_NewRef(args[0]);
    d->sub = sub;
    d->suspended = 0;
    PyObject_GC_Track(d);
    return (PyObject *)d;
}

/* =================================================================== snapshot */

/*
 * The C twin of snapshot.py's walk, for the values it meets most: builtin
 * scalars and containers, subclasses of str/bytes/bytearray/int/float/
 * complex/list/tuple/dict/set/frozenset, and instances of classes written in
 * Python with a plain instance __dict__ (no __slots__).  Anything else goes
 * to snapshot.py's own _walk (the fallback), which appends to the same list
 * of pieces and uses the same set of ids in progress: the text is the same
 * either way (tests/capture/test_snapshot.py compares them).  Nothing here
 * calls code of the program: reprs of exact builtin types, storage reads,
 * and the instance __dict__ descriptor CPython made for the class.
 */
static PyObject *snap_fallback = NULL;   /* snapshot._walk(v, out, left, depth, seen) -> left */
static PyObject *snap_enum = NULL;       /* enum.Enum */
static PyObject *snap_c_repr_types = NULL;  /* exact types defined in C that snapshot.py shows by their repr */
static PyObject *snap_python_types = NULL;  /* exact types snapshot.py formats itself (its _LEAVES...) */
static int snap_opt_in = 0;              /* value_repr set: classes written in Python go to the fallback */
static Py_ssize_t snap_limit = 1 << 16;
static Py_ssize_t snap_max_depth = 8, snap_field_depth = 1;

static PyObject *s_module = NULL, *s_dict = NULL, *s_empty = NULL, *s_slots = NULL, *s_fields = NULL;  /* interned at init */

/* One snapshot being written: the text so far, and the containers and objects being walked
 * (snapshot.py's `seen`, here a short stack of pointers: nesting is bounded by the depths). */
#define SNAP_STACK 64
typedef struct {
    _PyUnicodeWriter w;
    Py_ssize_t limit;
    Py_ssize_t n;
    PyObject *stack[SNAP_STACK];
} SnapState;

#define LEFT(st) ((st)->limit - (st)->w.pos)

static int snap_walk(SnapState *st, PyObject *v, Py_ssize_t depth);

static int
snap_ascii(SnapState *st, const char *s)
{
    return _PyUnicodeWriter_WriteASCIIString(&st->w, s, (Py_ssize_t)strlen(s));
}

/* Write `text` (stolen reference; NULL: an error is set). */
static int
snap_text_put(SnapState *st, PyObject *text)
{
    if (text == NULL)
        return -1;
    if (!PyUnicode_Check(text)) {
        Py_DECREF(text);
        PyErr_SetString(PyExc_TypeError, "a repr returned a non-string");
        return -1;
    }
    int rc = _PyUnicodeWriter_WriteStr(&st->w, text);
    Py_DECREF(text);
    return rc;
}

static int
snap_seen(SnapState *st, PyObject *v)
{
    for (Py_ssize_t i = 0; i < st->n; i++)
        if (st->stack[i] == v)
            return 1;
    return 0;
}

static int
snap_push(SnapState *st, PyObject *v)
{
    if (st->n >= SNAP_STACK) {
        PyErr_SetString(PyExc_RecursionError, "value snapshot nested too deeply");
        return -1;
    }
    st->stack[st->n++] = v;
    return 0;
}

static void
snap_pop(SnapState *st, PyObject *v)
{
    for (Py_ssize_t i = st->n - 1; i >= 0; i--) {
        if (st->stack[i] == v) {
            memmove(&st->stack[i], &st->stack[i + 1], (size_t)(st->n - i - 1) * sizeof(PyObject *));
            st->n--;
            return;
        }
    }
}

/* snapshot.py's walk for a value the C side leaves to it, on a list of pieces and the set of
 * ids in progress it expects; its text joins ours. */
static int
snap_to_fallback(SnapState *st, PyObject *v, Py_ssize_t depth)
{
    if (snap_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "snapshot fallback not set");
        return -1;
    }
    PyObject *out = PyList_New(0), *seen = PySet_New(NULL), *r = NULL, *text = NULL;
    int rc = -1;
    if (out == NULL || seen == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < st->n; i++) {
        PyObject *id = PyLong_FromVoidPtr(st->stack[i]);
        if (id == NULL || PySet_Add(seen, id) < 0) {
            Py_XDECREF(id);
            goto done;
        }
        Py_DECREF(id);
    }
    r = PyObject_CallFunction(snap_fallback, "OOnnO", v, out, LEFT(st), depth, seen);
    if (r == NULL)
        goto done;
    text = PyUnicode_Join(s_empty, out);
    if (text == NULL)
        goto done;
    rc = _PyUnicodeWriter_WriteStr(&st->w, text);
done:
    Py_XDECREF(out); Py_XDECREF(seen); Py_XDECREF(r); Py_XDECREF(text);
    return rc;
}

/* `module.Qualname` of a class written in Python, as snapshot._name writes it. */
static int
snap_type_name(SnapState *st, PyTypeObject *t)
{
    PyObject *qualname = ((PyHeapTypeObject *)t)->ht_qualname;
    PyObject *module = PyDict_GetItemWithError(t->tp_dict, s_module);
    if (module == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "__module__");
        return -1;
    }
    if (PyUnicode_CheckExact(module) && PyUnicode_CompareWithASCIIString(module, "builtins") != 0) {
        if (_PyUnicodeWriter_WriteStr(&st->w, module) < 0 || _PyUnicodeWriter_WriteChar(&st->w, '.') < 0)
            return -1;
    }
    return _PyUnicodeWriter_WriteStr(&st->w, qualname);
}

/* snapshot._name of any class: a class written in Python as above, one defined in C by its
 * tp_name (module and qualname are the parts of tp_name around its last dot; builtins: the name). */
static int
snap_any_type_name(SnapState *st, PyTypeObject *t)
{
    if (t->tp_flags & Py_TPFLAGS_HEAPTYPE)
        return snap_type_name(st, t);
    return snap_ascii(st, t->tp_name);
}

/* repr of the first `left` characters/bytes of a str/bytes/bytearray (exact copy, any subclass) */
static PyObject *
snap_cut_repr(PyObject *v, PyTypeObject *base, Py_ssize_t left, int always_copy)
{
    PyObject *part = NULL;
    if (base == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v);
        if (n <= left && !always_copy)
            return PyObject_Repr(v);
        part = PyUnicode_Substring(v, 0, n > left ? left : n);  /* an exact str */
    }
    else if (base == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        if (n <= left && !always_copy)
            return PyObject_Repr(v);
        part = PyBytes_FromStringAndSize(PyBytes_AS_STRING(v), n > left ? left : n);
    }
    else {
        Py_ssize_t n = PyByteArray_GET_SIZE(v);
        if (n <= left && !always_copy)
            return PyObject_Repr(v);
        part = PyByteArray_FromStringAndSize(PyByteArray_AS_STRING(v), n > left ? left : n);
    }
    if (part == NULL)
        return NULL;
    PyObject *r = PyObject_Repr(part);
    Py_DECREF(part);
    return r;
}

static PyObject *
snap_int_repr(PyObject *v)
{
    size_t bits = _PyLong_NumBits(v);
    if (bits == (size_t)-1 && PyErr_Occurred())
        return NULL;
    if (bits > 8000)
        return PyUnicode_FromFormat("<int of %zu bits>", bits);
    return PyLong_Type.tp_repr(v);
}

/* Exact types whose repr is CPython's C code reading the object's own state: 1 written,
 * 0 not a leaf, -1 error. */
static int
snap_leaf(SnapState *st, PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type && PyUnicode_IS_ASCII(v) && PyUnicode_GET_LENGTH(v) <= LEFT(st)) {
        /* the common short ASCII string, written as repr writes it without building the repr:
         * 'text' when it holds no quote, backslash or control character */
        const Py_UCS1 *c = PyUnicode_1BYTE_DATA(v);
        Py_ssize_t n = PyUnicode_GET_LENGTH(v), i;
        for (i = 0; i < n; i++)
            if (c[i] < 0x20 || c[i] == 0x7f || c[i] == '\'' || c[i] == '\\')
                break;
        if (i == n) {
            if (_PyUnicodeWriter_WriteChar(&st->w, '\'') < 0
                || _PyUnicodeWriter_WriteASCIIString(&st->w, (const char *)c, n) < 0
                || _PyUnicodeWriter_WriteChar(&st->w, '\'') < 0)
                return -1;
            return 1;
        }
    }
    if (t == &PyUnicode_Type || t == &PyBytes_Type || t == &PyByteArray_Type)
        return snap_text_put(st, snap_cut_repr(v, t, LEFT(st), 0)) < 0 ? -1 : 1;
    if (t == &PyLong_Type) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred())) {  /* most ints: no repr object built */
            char digits[32];
            int len = snprintf(digits, sizeof digits, "%lld", x);
            return _PyUnicodeWriter_WriteASCIIString(&st->w, digits, len) < 0 ? -1 : 1;
        }
        PyErr_Clear();
        return snap_text_put(st, snap_int_repr(v)) < 0 ? -1 : 1;
    }
    if (v == Py_None)
        return snap_ascii(st, "None") < 0 ? -1 : 1;
    if (t == &PyBool_Type)
        return snap_ascii(st, v == Py_True ? "True" : "False") < 0 ? -1 : 1;
    if (t == &PyFloat_Type || t == &PyComplex_Type || t == &PyRange_Type
        || v == Py_Ellipsis || v == Py_NotImplemented || t == &PyBaseObject_Type || t == &PyMemoryView_Type
        || t == &PyFunction_Type || t == &PyCFunction_Type || t == &PyCode_Type)
        return snap_text_put(st, PyObject_Repr(v)) < 0 ? -1 : 1;
    return 0;
}

static int
snap_is_container(PyTypeObject *t)
{
    return t == &PyList_Type || t == &PyTuple_Type || t == &PyDict_Type || t == &PySet_Type
        || t == &PyFrozenSet_Type;
}

static Py_ssize_t
snap_len(PyObject *v, PyTypeObject *base)
{
    if (base == &PyList_Type) return PyList_GET_SIZE(v);
    if (base == &PyTuple_Type) return PyTuple_GET_SIZE(v);
    if (base == &PyDict_Type) return PyDict_GET_SIZE(v);
    return PySet_GET_SIZE(v);
}

/* A builtin container, or a subclass (`named`: its type's name around it) read through its
 * builtin base's own storage (snapshot._container). */
static int
snap_container(SnapState *st, PyObject *v, PyTypeObject *base, PyTypeObject *named, Py_ssize_t depth)
{
    const char *opening, *closing;
    if (base == &PyList_Type) { opening = "["; closing = "]"; }
    else if (base == &PyTuple_Type) { opening = "("; closing = ")"; }
    else if (base == &PyFrozenSet_Type) { opening = "frozenset({"; closing = "})"; }
    else { opening = "{"; closing = "}"; }
    Py_ssize_t size = snap_len(v, base);
    if (named != NULL && (snap_type_name(st, named) < 0 || _PyUnicodeWriter_WriteChar(&st->w, '(') < 0))
        return -1;
    const char *text = NULL;
    if (!size && (base == &PySet_Type || base == &PyFrozenSet_Type))
        text = base == &PySet_Type ? "set()" : "frozenset()";
    else if (!size)
        text = base == &PyList_Type ? "[]" : base == &PyTuple_Type ? "()" : "{}";
    else if (snap_seen(st, v))  /* a container that holds itself, as repr shows it */
        text = base == &PyList_Type ? "[...]" : base == &PyDict_Type ? "{...}" : "...";
    if (text != NULL) {
        if (snap_ascii(st, text) < 0)
            return -1;
    }
    else if (depth >= snap_max_depth) {
        if (snap_ascii(st, opening) < 0 || snap_ascii(st, "...") < 0 || snap_ascii(st, closing) < 0)
            return -1;
    }
    else {
        if (snap_ascii(st, opening) < 0 || snap_push(st, v) < 0)
            return -1;
        int first = 1;
        if (base == &PyDict_Type) {
            Py_ssize_t pos = 0;
            PyObject *k, *item;
            while (PyDict_Next(v, &pos, &k, &item)) {
                if (LEFT(st) <= 0)
                    return 0;
                if (!first && snap_ascii(st, ", ") < 0)
                    return -1;
                first = 0;
                Py_INCREF(k); Py_INCREF(item);
                int rc = snap_walk(st, k, depth + 1);
                if (rc == 0 && LEFT(st) > 0) {
                    rc = snap_ascii(st, ": ");
                    if (rc == 0)
                        rc = snap_walk(st, item, depth + 1);
                }
                Py_DECREF(k); Py_DECREF(item);
                if (rc < 0)
                    return -1;
                if (LEFT(st) <= 0)
                    return 0;
            }
        }
        else if (base == &PySet_Type || base == &PyFrozenSet_Type) {
            PyObject *it = PySet_Type.tp_iter(v);  /* the set's own iterator, whatever the subclass says */
            if (it == NULL)
                return -1;
            PyObject *item;
            int rc = 0;
            while (rc == 0 && LEFT(st) > 0 && (item = PyIter_Next(it)) != NULL) {
                if (!first)
                    rc = snap_ascii(st, ", ");
                first = 0;
                if (rc == 0)
                    rc = snap_walk(st, item, depth + 1);
                Py_DECREF(item);
            }
            Py_DECREF(it);
            if (rc < 0 || PyErr_Occurred())
                return -1;
        }
        else {
            int is_list = base == &PyList_Type;
            for (Py_ssize_t i = 0; i < (is_list ? PyList_GET_SIZE(v) : PyTuple_GET_SIZE(v)); i++) {
                if (LEFT(st) <= 0)
                    return 0;
                if (!first && snap_ascii(st, ", ") < 0)
                    return -1;
                first = 0;
                PyObject *item = Py_NewRef(is_list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i));
                int rc = snap_walk(st, item, depth + 1);
                Py_DECREF(item);
                if (rc < 0)
                    return -1;
            }
        }
        if (LEFT(st) <= 0)
            return 0;
        if (base == &PyTuple_Type && size == 1 && _PyUnicodeWriter_WriteChar(&st->w, ',') < 0)
            return -1;
        snap_pop(st, v);
        if (snap_ascii(st, closing) < 0)
            return -1;
    }
    if (named != NULL && _PyUnicodeWriter_WriteChar(&st->w, ')') < 0)
        return -1;
    return 0;
}

/* The instance __dict__ read through the descriptor CPython made for the class (new reference), or
 * NULL: without error when there is none (snapshot._instance_dict). */
static PyObject *
snap_instance_dict(PyObject *v, PyTypeObject *t)
{
    PyObject *descr = _PyType_Lookup(t, s_dict);  /* borrowed; MRO dicts only */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyGetSetDescr_Type)
        || !(((PyDescrObject *)descr)->d_type->tp_flags & Py_TPFLAGS_HEAPTYPE))
        return NULL;
    Py_INCREF(descr);
    PyObject *d = Py_TYPE(descr)->tp_descr_get(descr, v, (PyObject *)t);
    Py_DECREF(descr);
    if (d != NULL && !PyDict_CheckExact(d))
        Py_CLEAR(d);
    return d;
}

/* Append (name, value) of the filled __slots__ of heap classes to `pairs` (snapshot._slots),
 * reading each class's namespace: the slow path of snap_slots. */
static int
snap_slots_walk(PyObject *v, PyTypeObject *t, PyObject *pairs)
{
    PyObject *mro = t->tp_mro;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *k = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(k->tp_flags & Py_TPFLAGS_HEAPTYPE) || k->tp_dict == NULL)
            continue;
        int has = PyDict_Contains(k->tp_dict, s_slots);
        if (has < 0)
            return -1;
        if (!has)
            continue;
        Py_ssize_t pos = 0;
        PyObject *name, *descr;
        while (PyDict_Next(k->tp_dict, &pos, &name, &descr)) {
            if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || (PyUnicode_Check(name)
                    && PyUnicode_CompareWithASCIIString(name, "__weakref__") == 0))
                continue;
            Py_INCREF(name); Py_INCREF(descr);
            PyObject *value = Py_TYPE(descr)->tp_descr_get(descr, v, (PyObject *)k);
            Py_DECREF(descr);
            if (value == NULL) {
                Py_DECREF(name);
                if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                    return -1;
                PyErr_Clear();  /* an empty slot */
                continue;
            }
            PyObject *pair = PyTuple_Pack(2, name, value);
            Py_DECREF(name); Py_DECREF(value);
            if (pair == NULL || PyList_Append(pairs, pair) < 0) {
                Py_XDECREF(pair);
                return -1;
            }
            Py_DECREF(pair);
        }
    }
    return 0;
}

/*
 * The slots of a class, found once: walking every class namespace of the MRO for member
 * descriptors costs thousands of instructions per value for classes with many methods (a parser's
 * node classes).  A small direct-mapped cache keyed by the type's address and version tag (CPython
 * gives a type a new tag whenever it or a base changes; tags are not reused) keeps each slot's
 * name and offset in the instance; it holds no reference to the type, so no class is kept alive.
 * Only classes whose slots are all the ordinary kind (__slots__ made them: an object pointer at an
 * offset, empty when NULL) are cached; any other class takes the walk above.
 */
typedef struct {
    PyTypeObject *type;
    unsigned int version;
    int cacheable;
    Py_ssize_t n;
    PyObject **names;     /* strong references (str) */
    Py_ssize_t *offsets;
} SlotsEntry;
#define SLOTS_CACHE 256
static SlotsEntry slots_cache[SLOTS_CACHE];

static void
slots_entry_clear(SlotsEntry *e)
{
    for (Py_ssize_t i = 0; i < e->n; i++)
        Py_XDECREF(e->names[i]);
    PyMem_Free(e->names);
    PyMem_Free(e->offsets);
    e->names = NULL;
    e->offsets = NULL;
    e->n = 0;
    e->type = NULL;
    e->cacheable = 0;
}

/* Fill `e` for `t` (its version tag is valid); 0, or -1 with an error. */
static int
slots_entry_fill(SlotsEntry *e, PyTypeObject *t)
{
    slots_entry_clear(e);
    PyObject *mro = t->tp_mro;
    Py_ssize_t cap = 0;
    e->cacheable = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *k = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(k->tp_flags & Py_TPFLAGS_HEAPTYPE) || k->tp_dict == NULL)
            continue;
        int has = PyDict_Contains(k->tp_dict, s_slots);
        if (has < 0)
            return -1;
        if (!has)
            continue;
        Py_ssize_t pos = 0;
        PyObject *name, *descr;
        while (PyDict_Next(k->tp_dict, &pos, &name, &descr)) {
            if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || (PyUnicode_Check(name)
                    && PyUnicode_CompareWithASCIIString(name, "__weakref__") == 0))
                continue;
            PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
            if (((PyDescrObject *)descr)->d_type != k || m->type != T_OBJECT_EX || !PyUnicode_CheckExact(name)) {
                e->cacheable = 0;  /* not an ordinary slot of this class: the walk decides */
                continue;
            }
            if (e->n == cap) {
                Py_ssize_t want = cap ? cap * 2 : 8;
                PyObject **names = PyMem_Realloc(e->names, (size_t)want * sizeof(PyObject *));
                if (names == NULL)
                    return (PyErr_NoMemory(), -1);
                e->names = names;
                Py_ssize_t *offsets = PyMem_Realloc(e->offsets, (size_t)want * sizeof(Py_ssize_t));
                if (offsets == NULL)
                    return (PyErr_NoMemory(), -1);
                e->offsets = offsets;
                cap = want;
            }
            e->names[e->n] = Py_NewRef(name);
            e->offsets[e->n] = m->offset;
            e->n++;
        }
    }
    e->type = t;
    e->version = t->tp_version_tag;
    return 0;
}

static int
snap_slots(PyObject *v, PyTypeObject *t, PyObject *pairs)
{
    if (!(t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) || Py_TYPE(v) != t)
        return snap_slots_walk(v, t, pairs);
    SlotsEntry *e = &slots_cache[((uintptr_t)t >> 4) % SLOTS_CACHE];
    if (e->type != t || e->version != t->tp_version_tag) {
        if (slots_entry_fill(e, t) < 0) {
            slots_entry_clear(e);
            return -1;
        }
    }
    if (!e->cacheable)
        return snap_slots_walk(v, t, pairs);
    for (Py_ssize_t i = 0; i < e->n; i++) {
        PyObject *value = *(PyObject **)((char *)v + e->offsets[i]);
        if (value == NULL)
            continue;  /* an empty slot */
        PyObject *pair = PyTuple_Pack(2, e->names[i], value);
        if (pair == NULL || PyList_Append(pairs, pair) < 0) {
            Py_XDECREF(pair);
            return -1;
        }
        Py_DECREF(pair);
    }
    return 0;
}

/* An enum member: <module.Qual.NAME: value> (snapshot._enum_member). */
static int
snap_enum_member(SnapState *st, PyObject *v, PyTypeObject *t, Py_ssize_t depth)
{
    PyObject *d = snap_instance_dict(v, t);
    if (d == NULL && PyErr_Occurred())
        return -1;
    PyObject *name = d ? PyDict_GetItemString(d, "_name_") : NULL;   /* borrowed */
    PyObject *value = d ? PyDict_GetItemString(d, "_value_") : NULL;
    Py_XINCREF(name);
    Py_XINCREF(value);
    Py_XDECREF(d);
    int rc = -1;
    if (_PyUnicodeWriter_WriteChar(&st->w, '<') < 0 || snap_type_name(st, t) < 0)
        goto done;
    if (name != NULL && PyUnicode_CheckExact(name)
        && (_PyUnicodeWriter_WriteChar(&st->w, '.') < 0 || _PyUnicodeWriter_WriteStr(&st->w, name) < 0))
        goto done;
    if (snap_ascii(st, ": ") < 0 || snap_walk(st, value ? value : Py_None, depth + 1) < 0)
        goto done;
    rc = _PyUnicodeWriter_WriteChar(&st->w, '>');
done:
    Py_XDECREF(name);
    Py_XDECREF(value);
    return rc;
}

/* " at 0x<hex>" + tail into `buf` (as f" at {id(v):#x}"), without printf's cost. */
static void
format_at(char *buf, const void *p, const char *tail)
{
    static const char hex[] = "0123456789abcdef";
    char digits[2 * sizeof(uintptr_t)];
    uintptr_t x = (uintptr_t)p;
    int n = 0;
    do {
        digits[n++] = hex[x & 0xf];
        x >>= 4;
    } while (x);
    memcpy(buf, " at 0x", 6);
    buf += 6;
    while (n)
        *buf++ = digits[--n];
    while ((*buf++ = *tail++))
        ;
}

/* One field of an instance, `sep`key=value; 1 when the limit was reached first, -1 on error. */
static int
snap_field(SnapState *st, PyObject *k, PyObject *item, Py_ssize_t depth, const char **sep)
{
    if (LEFT(st) <= 0)
        return 1;
    if (!PyUnicode_CheckExact(k))
        return 0;
    if (PyUnicode_GET_LENGTH(k) >= 4 && PyUnicode_READ_CHAR(k, 0) == '_' && PyUnicode_READ_CHAR(k, 1) == 's'
        && PyUnicode_READ_CHAR(k, 2) == 'a' && PyUnicode_READ_CHAR(k, 3) == '_')
        return 0;  /* SQLAlchemy's instance state */
    if (snap_ascii(st, *sep) < 0 || _PyUnicodeWriter_WriteStr(&st->w, k) < 0
        || _PyUnicodeWriter_WriteChar(&st->w, '=') < 0 || snap_walk(st, item, depth + 1) < 0)
        return -1;
    *sep = ", ";
    return 0;
}

/* An instance of a class written in Python: <module.Qual at 0x...: a=1, b=2> (snapshot._instance). */
static int
snap_instance(SnapState *st, PyObject *v, PyTypeObject *t, Py_ssize_t depth)
{
    char where[32];
    format_at(where, v, "");  /* as f"{id(v):#x}" */
    if (_PyUnicodeWriter_WriteChar(&st->w, '<') < 0 || snap_type_name(st, t) < 0 || snap_ascii(st, where) < 0)
        return -1;
    if (depth <= snap_field_depth && !snap_seen(st, v)) {
        PyObject *d = snap_instance_dict(v, t);
        if (d == NULL && PyErr_Occurred())
            return -1;
        PyObject *slots = PyList_New(0);
        if (slots == NULL || snap_slots(v, t, slots) < 0) {
            Py_XDECREF(d);
            Py_XDECREF(slots);
            return -1;
        }
        int r = 0;
        if ((d != NULL && PyDict_GET_SIZE(d)) || PyList_GET_SIZE(slots)) {
            const char *sep = ": ";
            r = snap_push(st, v);
            /* the dict is read in place, as dict's own repr does (each key and value held while
             * it is written): no list of pairs is built for it */
            Py_ssize_t pos = 0;
            PyObject *k, *item;
            while (r == 0 && d != NULL && PyDict_Next(d, &pos, &k, &item)) {
                Py_INCREF(k);
                Py_INCREF(item);
                r = snap_field(st, k, item, depth, &sep);
                Py_DECREF(k);
                Py_DECREF(item);
            }
            for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(slots); i++) {
                PyObject *pair = PyList_GET_ITEM(slots, i);
                r = snap_field(st, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), depth, &sep);
            }
            if (r == 0)
                snap_pop(st, v);
        }
        Py_XDECREF(d);
        Py_DECREF(slots);
        if (r != 0)
            return r < 0 ? -1 : 0;  /* 1: the limit is reached, the text ends here */
    }
    return _PyUnicodeWriter_WriteChar(&st->w, '>');
}

/* A named tuple: module.Qual(a=1, b=2) (snapshot._named_tuple). */
static int
snap_named_tuple(SnapState *st, PyObject *v, PyTypeObject *t, PyObject *fields, Py_ssize_t depth)
{
    if (snap_type_name(st, t) < 0 || _PyUnicodeWriter_WriteChar(&st->w, '(') < 0)
        return -1;
    Py_INCREF(fields);  /* the class could change while an item is walked */
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); i++) {
        if (LEFT(st) <= 0)
            goto done;
        if (i && snap_ascii(st, ", ") < 0)
            goto error;
        if (i < PyTuple_GET_SIZE(fields)) {
            if (_PyUnicodeWriter_WriteStr(&st->w, PyTuple_GET_ITEM(fields, i)) < 0)
                goto error;
        }
        else {
            char digits[24];
            snprintf(digits, sizeof digits, "%zd", i);
            if (snap_ascii(st, digits) < 0)
                goto error;
        }
        PyObject *item = Py_NewRef(PyTuple_GET_ITEM(v, i));
        int r = _PyUnicodeWriter_WriteChar(&st->w, '=') < 0 ? -1 : snap_walk(st, item, depth + 1);
        Py_DECREF(item);
        if (r < 0)
            goto error;
    }
    rc = _PyUnicodeWriter_WriteChar(&st->w, ')');
done:
    Py_DECREF(fields);
    return rc;
error:
    Py_DECREF(fields);
    return -1;
}

/* A value of a type created by a class statement (a heap type): snapshot._other's order. */
static int
snap_heap(SnapState *st, PyObject *v, PyTypeObject *t, Py_ssize_t depth)
{
    PyObject *mro = t->tp_mro;
    if (snap_opt_in || mro == NULL || !PyTuple_Check(mro))
        return snap_to_fallback(st, v, depth);
    if (snap_python_types != NULL) {  /* standard-library classes snapshot.py shows by their repr */
        int known = PySet_Contains(snap_python_types, (PyObject *)t);
        if (known < 0)
            return -1;
        if (known) {
            int c_repr = snap_c_repr_types == NULL ? 0 : PySet_Contains(snap_c_repr_types, (PyObject *)t);
            if (c_repr < 0)
                return -1;
            if (c_repr && t->tp_repr != NULL)  /* a repr written in C (re.Pattern) */
                return snap_text_put(st, t->tp_repr(v));
            return snap_to_fallback(st, v, depth);
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(mro);
    for (Py_ssize_t i = 0; i < n; i++) {  /* classes and enum members first */
        PyObject *base = PyTuple_GET_ITEM(mro, i);
        if (base == (PyObject *)&PyType_Type)  /* a class: type's own repr reads its module and qualname */
            return snap_text_put(st, PyType_Type.tp_repr(v));
        if (base == snap_enum)
            return snap_enum_member(st, v, t, depth);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (base->tp_flags & Py_TPFLAGS_HEAPTYPE)
            continue;
        if (base == &PyBaseObject_Type)
            return snap_instance(st, v, t, depth);
        if (snap_is_container(base)) {
            if (base == &PyTuple_Type) {  /* named tuples: a _fields tuple of names in the class */
                PyObject *fields = _PyType_Lookup(t, s_fields);  /* borrowed; class dicts only */
                if (fields != NULL && PyTuple_CheckExact(fields)) {
                    int names = 1;
                    for (Py_ssize_t f = 0; f < PyTuple_GET_SIZE(fields) && names; f++)
                        names = PyUnicode_CheckExact(PyTuple_GET_ITEM(fields, f));
                    if (names)
                        return snap_named_tuple(st, v, t, fields, depth);
                }
            }
            return snap_container(st, v, base, t, depth);
        }
        PyObject *inner = NULL;
        if (base == &PyUnicode_Type || base == &PyBytes_Type || base == &PyByteArray_Type)
            inner = snap_cut_repr(v, base, LEFT(st), 1);
        else if (base == &PyLong_Type)
            inner = snap_int_repr(v);
        else if (base == &PyFloat_Type || base == &PyComplex_Type)
            inner = base->tp_repr(v);
        else
            return snap_to_fallback(st, v, depth);
        if (inner == NULL)
            return -1;
        if (snap_type_name(st, t) < 0 || _PyUnicodeWriter_WriteChar(&st->w, '(') < 0) {
            Py_DECREF(inner);
            return -1;
        }
        if (snap_text_put(st, inner) < 0)
            return -1;
        return _PyUnicodeWriter_WriteChar(&st->w, ')');
    }
    return snap_to_fallback(st, v, depth);
}

/* A value of a type defined in C that snapshot.py would show as <name at 0x...> (its _instance
 * with no fields: the class has no Python-made __dict__ descriptor, no heap __slots__): the type
 * derives from object alone and is none snapshot.py formats itself.  1 written, 0 not such a type. */
static int
snap_static_plain(SnapState *st, PyObject *v, PyTypeObject *t)
{
    if (t->tp_base != &PyBaseObject_Type || t->tp_mro == NULL || PyTuple_GET_SIZE(t->tp_mro) != 2
        || snap_python_types == NULL || PyType_Check(v) || PyExceptionInstance_Check(v))
        return 0;  /* classes and exceptions: snapshot.py's own formats */
    int known = PySet_Contains(snap_python_types, (PyObject *)t);
    if (known < 0)
        return -1;
    if (known) {  /* snapshot.py's own: its plain repr for the types it names so, C code of CPython */
        int plain = snap_c_repr_types == NULL ? 0 : PySet_Contains(snap_c_repr_types, (PyObject *)t);
        if (plain <= 0 || t->tp_repr == NULL)
            return plain;
        return snap_text_put(st, t->tp_repr(v)) < 0 ? -1 : 1;
    }
    char where[40];
    format_at(where, v, ">");
    if (_PyUnicodeWriter_WriteChar(&st->w, '<') < 0 || snap_ascii(st, t->tp_name) < 0 || snap_ascii(st, where) < 0)
        return -1;
    return 1;
}

/* A bound method: <bound method Qual.name of <module.Type at 0x...>> (snapshot._other). */
static int
snap_method(SnapState *st, PyObject *v)
{
    PyObject *func = PyMethod_GET_FUNCTION(v), *owner = PyMethod_GET_SELF(v);
    if (snap_ascii(st, "<bound method ") < 0)
        return -1;
    if (PyFunction_Check(func) && Py_IS_TYPE(func, &PyFunction_Type)) {
        if (_PyUnicodeWriter_WriteStr(&st->w, ((PyFunctionObject *)func)->func_qualname) < 0)
            return -1;
    }
    else if (snap_any_type_name(st, Py_TYPE(func)) < 0)
        return -1;
    char where[40];
    format_at(where, owner, ">>");
    if (snap_ascii(st, " of <") < 0 || snap_any_type_name(st, Py_TYPE(owner)) < 0 || snap_ascii(st, where) < 0)
        return -1;
    return 0;
}

static int
snap_walk(SnapState *st, PyObject *v, Py_ssize_t depth)
{
    if (LEFT(st) <= 0)
        return 0;  /* past the limit: the text is cut there anyway */
    int r = snap_leaf(st, v);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if (Py_EnterRecursiveCall(" in a value snapshot"))
        return -1;
    PyTypeObject *t = Py_TYPE(v);
    if (snap_is_container(t))
        r = snap_container(st, v, t, NULL, depth);
    else if (t->tp_flags & Py_TPFLAGS_HEAPTYPE)
        r = snap_heap(st, v, t, depth);
    else if (t == &PyMethod_Type && !snap_opt_in)
        r = snap_method(st, v);
    else if (!snap_opt_in && (t == &PyType_Type || t == &PyFunction_Type || t == &PyCFunction_Type
                              || t == &PyCode_Type || t == &PyRange_Type))
        r = snap_text_put(st, t->tp_repr(v));  /* CPython's C reprs, as snapshot.py's _plain and _other */
    else if (!snap_opt_in && (r = snap_static_plain(st, v, t)) != 0)
        r = r < 0 ? -1 : 0;
    else
        r = snap_to_fallback(st, v, depth);
    Py_LeaveRecursiveCall();
    return r;
}

/* snapshot(value, limit) -> str: what snapshot.snapshot returns, or NULL with the error it raises. */
static PyObject *
snap_text(PyObject *v, Py_ssize_t limit)
{
    SnapState st;
    _PyUnicodeWriter_Init(&st.w);
    st.w.overallocate = 1;
    /* room for a typical object's text at once (growing a writer reallocates every few dozen
     * characters), kept within what CPython's small-object allocator serves: beyond 512 bytes
     * every snapshot would go to the system allocator */
    st.w.min_length = limit < 400 ? limit : 400;
    st.limit = limit;
    st.n = 0;
    if (snap_walk(&st, v, 0) < 0) {
        _PyUnicodeWriter_Dealloc(&st.w);
        return NULL;
    }
    PyObject *text = _PyUnicodeWriter_Finish(&st.w);
    if (text != NULL && PyUnicode_GET_LENGTH(text) > limit)
        Py_SETREF(text, PyUnicode_Substring(text, 0, limit));
    return text;
}

static PyObject *
speedups_snapshot(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "snapshot(value, limit)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    return snap_text(args[0], limit);
}

/* snap(value): runtime._snap's twin for the C hot path (plain values as they are). */
static PyObject *
speedups_snap(PyObject *Py_UNUSED(m), PyObject *v)
{
    if (is_plain(v))
        return Py_NewRef(v);
    PyObject *text = snap_text(v, snap_limit);
    if (text == NULL) {
        PyErr_Clear();
        return PyUnicode_FromString("<unrepresentable value>");
    }
    return text;
}

static PyObject *
speedups_snapshot_config(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fallback", "enum", "opt_in", "limit", "max_depth", "field_depth", "python_types",
                             "c_repr_types", NULL};
    PyObject *fallback = NULL, *enum_type = NULL, *python_types = NULL, *c_repr_types = NULL;
    int opt_in = -1;
    Py_ssize_t limit = -1, max_depth = -1, field_depth = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOinnnOO", kwlist, &fallback, &enum_type, &opt_in, &limit,
                                     &max_depth, &field_depth, &python_types, &c_repr_types))
        return NULL;
    if (c_repr_types != NULL) {
        PyObject *set = PyFrozenSet_New(c_repr_types);
        if (set == NULL)
            return NULL;
        Py_XSETREF(snap_c_repr_types, set);
    }
    if (python_types != NULL) {
        PyObject *set = PyFrozenSet_New(python_types);
        if (set == NULL)
            return NULL;
        Py_XSETREF(snap_python_types, set);
    }
    if (fallback != NULL)
        Py_XSETREF(snap_fallback, Py_NewRef(fallback));
    if (enum_type != NULL)
        Py_XSETREF(snap_enum, Py_NewRef(enum_type));
    if (opt_in >= 0)
        snap_opt_in = opt_in;
    if (limit >= 0)
        snap_limit = limit;
    if (max_depth >= 0)
        snap_max_depth = max_depth;
    if (field_depth >= 0)
        snap_field_depth = field_depth;
    Py_RETURN_NONE;
}

/* ================================================================ exceptions */

/*
 * exception_summary(exc, limit): the C twin of snapshot.exception_summary (same tuple), read
 * from the exception's and traceback's own fields: no code of the program runs, and the
 * summary holds no reference to the exception, its traceback or its frames.
 *
 * A parser that raises for control flow sends hundreds of thousands of exceptions through
 * recorded calls, each summarized once per recorded frame it leaves, and the frames repeat:
 * each (filename, line, function) tuple is kept in a small direct-mapped cache keyed by the
 * code object's address and the instruction offset.  An entry holds no reference to the code
 * object, only to the tuple and to the code's line table, so a hit is exact: the same line table
 * (alive, held here), offset, filename and name objects give the same line.
 */
#define EXC_MAX_HEAD 16   /* snapshot.MAX_FRAMES_HEAD */
#define EXC_MAX_TAIL 48   /* snapshot.MAX_FRAMES_TAIL */
#define EXC_MAX_CHAIN 4   /* snapshot._MAX_CHAIN */
#define FRAME_CACHE 1024

typedef struct {
    void *code;           /* address only: never dereferenced */
    int lasti;
    int firstlineno;
    PyObject *linetable;  /* strong */
    PyObject *frame;      /* strong: (filename, line, name) */
} FrameEntry;

static FrameEntry frame_cache[FRAME_CACHE];
static PyObject *s_tb_lineno = NULL;   /* interned at init */
static PyObject *exc_fallback = NULL;  /* what a record keeps when the summary itself fails */

#define CODE_LINETABLE(c) ((c)->co_linetable)  /* 3.10 to 3.13 */

/* (filename, line, function) of one traceback entry (new reference). */
static PyObject *
exc_frame(PyTracebackObject *tb)
{
    PyCodeObject *code = PyFrame_GetCode(tb->tb_frame);
    uintptr_t h = ((uintptr_t)code >> 4) * 31u + (uintptr_t)tb->tb_lasti;
    FrameEntry *e = &frame_cache[(h ^ (h >> 10)) % FRAME_CACHE];
    PyObject *linetable = CODE_LINETABLE(code);
    if (e->frame != NULL && e->code == (void *)code && e->lasti == tb->tb_lasti && e->linetable == linetable
        && e->firstlineno == code->co_firstlineno && PyTuple_GET_ITEM(e->frame, 0) == code->co_filename
        && PyTuple_GET_ITEM(e->frame, 2) == code->co_name) {
        Py_DECREF(code);
        return Py_NewRef(e->frame);
    }
    /* the line as tb.tb_lineno computes it (traceback's own getter) */
    PyObject *line = PyObject_GetAttr((PyObject *)tb, s_tb_lineno);
    if (line == NULL) {
        Py_DECREF(code);
        return NULL;
    }
    PyObject *frame = PyTuple_Pack(3, code->co_filename, line, code->co_name);
    Py_DECREF(line);
    if (frame == NULL) {
        Py_DECREF(code);
        return NULL;
    }
    PyObject_GC_UnTrack(frame);  /* str, int (or None), str */
    e->code = (void *)code;
    e->lasti = tb->tb_lasti;
    e->firstlineno = code->co_firstlineno;
    Py_XSETREF(e->linetable, Py_XNewRef(linetable));
    Py_XSETREF(e->frame, Py_NewRef(frame));
    Py_DECREF(code);
    return frame;
}

/* `module` of a class as type.__module__ reads it (new reference; "" when it is not a str). */
static PyObject *
exc_type_module(PyTypeObject *t)
{
    if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        PyObject *m = t->tp_dict != NULL ? PyDict_GetItemWithError(t->tp_dict, s_module) : NULL;
        if (m == NULL && PyErr_Occurred())
            return NULL;
        return Py_NewRef(m != NULL && PyUnicode_CheckExact(m) ? m : s_empty);
    }
    const char *dot = strrchr(t->tp_name, '.');
    if (dot == NULL)
        return PyUnicode_FromString("builtins");
    return PyUnicode_FromStringAndSize(t->tp_name, dot - t->tp_name);
}

/* type.__qualname__ (new reference). */
static PyObject *
exc_type_qualname(PyTypeObject *t)
{
    if (t->tp_flags & Py_TPFLAGS_HEAPTYPE)
        return Py_NewRef(((PyHeapTypeObject *)t)->ht_qualname);
    const char *dot = strrchr(t->tp_name, '.');
    return PyUnicode_FromString(dot != NULL ? dot + 1 : t->tp_name);
}

static int
exc_safe_arg(PyObject *a)
{
    PyTypeObject *t = Py_TYPE(a);
    return t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type || t == &PyBool_Type
        || t == &PyBytes_Type || a == Py_None;
}

/* snapshot._message (new reference). */
static PyObject *
exc_message(PyObject *exc, PyTypeObject *t, PyObject *module, Py_ssize_t limit)
{
    PyObject *args = ((PyBaseExceptionObject *)exc)->args;
    Py_ssize_t n = args != NULL && PyTuple_Check(args) ? PyTuple_GET_SIZE(args) : 0;
    PyObject *text;
    int safe = !(t->tp_flags & Py_TPFLAGS_HEAPTYPE) && PyUnicode_CompareWithASCIIString(module, "builtins") == 0;
    for (Py_ssize_t i = 0; safe && i < n; i++)
        safe = exc_safe_arg(PyTuple_GET_ITEM(args, i));
    if (safe)
        text = PyObject_Str(exc);  /* BaseException/OSError/KeyError/... __str__: C code over plain values */
    else if (n == 1 && PyUnicode_CheckExact(PyTuple_GET_ITEM(args, 0)))
        text = Py_NewRef(PyTuple_GET_ITEM(args, 0));
    else if (n == 0)
        text = Py_NewRef(s_empty);
    else
        text = snap_text(n == 1 ? PyTuple_GET_ITEM(args, 0) : args, limit);
    if (text != NULL && PyUnicode_Check(text) && PyUnicode_GET_LENGTH(text) > limit)
        Py_SETREF(text, PyUnicode_Substring(text, 0, limit));
    return text;
}

/* `c` is one of the exceptions already summarized in this chain (or not an exception at all). */
static int
exc_seen(PyObject *c, PyObject **seen, int nseen)
{
    for (int k = 0; k < nseen; k++)
        if (seen[k] == c)
            return 1;
    return !PyExceptionInstance_Check(c);
}

static PyObject *
exc_summary(PyObject *exc, Py_ssize_t limit, int chain, PyObject **seen, int nseen)
{
    seen[nseen++] = exc;
    PyTypeObject *t = Py_TYPE(exc);
    PyObject *frames = NULL, *cause = NULL, *context = NULL, *module = NULL, *qualname = NULL, *message = NULL;
    PyObject *tb0 = PyException_GetTraceback(exc), *result = NULL;
    Py_ssize_t total = 0;
    for (PyObject *tb = tb0; tb != NULL && PyTraceBack_Check(tb); tb = (PyObject *)((PyTracebackObject *)tb)->tb_next)
        total++;
    Py_ssize_t kept = total <= EXC_MAX_HEAD + EXC_MAX_TAIL ? total : EXC_MAX_HEAD + EXC_MAX_TAIL;
    frames = PyTuple_New(kept);
    if (frames == NULL)
        goto done;
    Py_ssize_t i = 0, j = 0;
    for (PyObject *tb = tb0; tb != NULL && PyTraceBack_Check(tb) && j < kept;
         tb = (PyObject *)((PyTracebackObject *)tb)->tb_next, i++) {
        if (i >= EXC_MAX_HEAD && i < total - (kept - EXC_MAX_HEAD))
            continue;  /* the middle of a very deep traceback */
        PyObject *frame = exc_frame((PyTracebackObject *)tb);
        if (frame == NULL)
            goto done;
        PyTuple_SET_ITEM(frames, j++, frame);
    }
    if (chain > 0) {
        PyObject *c = PyException_GetCause(exc);
        if (c != NULL && !exc_seen(c, seen, nseen))
            cause = exc_summary(c, limit, chain - 1, seen, nseen);
        else if (c == NULL && !((PyBaseExceptionObject *)exc)->suppress_context) {
            c = PyException_GetContext(exc);
            if (c != NULL && !exc_seen(c, seen, nseen))
                context = exc_summary(c, limit, chain - 1, seen, nseen);
        }
        Py_XDECREF(c);
        if ((cause == NULL && context == NULL) && PyErr_Occurred())
            goto done;
    }
    module = exc_type_module(t);
    qualname = module != NULL ? exc_type_qualname(t) : NULL;
    message = qualname != NULL ? exc_message(exc, t, module, limit) : NULL;
    if (message != NULL)
        result = Py_BuildValue("(OOOOnOO)", qualname, module, message, frames, total - kept,
                               cause != NULL ? cause : Py_None, context != NULL ? context : Py_None);
done:
    Py_XDECREF(tb0);
    Py_XDECREF(frames);
    Py_XDECREF(cause);
    Py_XDECREF(context);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(message);
    return result;
}

/* The summary of `exc` (new reference, untracked), or NULL with an error set. */
static PyObject *
exception_summary_c(PyObject *exc, Py_ssize_t limit)
{
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "exception_summary: not an exception");
        return NULL;
    }
    PyObject *seen[EXC_MAX_CHAIN + 2];
    PyObject *summary = exc_summary(exc, limit, EXC_MAX_CHAIN, seen, 0);
    if (summary != NULL)
        untrack_tuples(summary, 8);
    return summary;
}

static PyObject *
speedups_exception_summary(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "exception_summary(exc, limit)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    return exception_summary_c(args[0], limit);
}

/* summarize(exc): exception_summary(exc, limit) at the snapshots' limit (the hot path's summarize). */
static PyObject *
speedups_summarize(PyObject *Py_UNUSED(m), PyObject *exc)
{
    return exception_summary_c(exc, snap_limit);
}

/* ==================================================================== module */

static PyObject *
speedups_call_cache(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", call_numfree, call_freelist_max);
}

static PyMethodDef speedups_functions[] = {
    {"snapshot", (PyCFunction)(void (*)(void))speedups_snapshot, METH_FASTCALL,
     "snapshot(value, limit) -> str: the C twin of snapshot.snapshot."},
    {"exception_summary", (PyCFunction)(void (*)(void))speedups_exception_summary, METH_FASTCALL,
     "exception_summary(exc, limit) -> tuple: the C twin of snapshot.exception_summary."},
    {"summarize", speedups_summarize, METH_O, "summarize(exc): exception_summary at the snapshots' limit."},
    {"snap", speedups_snap, METH_O, "snap(value): a plain value as it is, else its snapshot (runtime._snap's twin)."},
    {"snapshot_config", (PyCFunction)(void (*)(void))speedups_snapshot_config, METH_VARARGS | METH_KEYWORDS,
     "snapshot_config(*, fallback, enum, opt_in, limit, max_depth, field_depth)"},
    {"call_cache", speedups_call_cache, METH_NOARGS, "(freed Calls kept for reuse, their bound)."},
    {"recalibrate", speedups_recalibrate, METH_NOARGS, "Realign the TSC clock with CLOCK_REALTIME; True if the TSC is used."},
    {"now_ns", speedups_now_ns, METH_NOARGS, "The hot path's clock, in ns since the epoch."},
    {"use_system_clock", speedups_use_system_clock, METH_O, "True: always clock_gettime; False: TSC where usable."},
    {NULL}
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "scope_otel.capture._speedups",
    .m_doc = "C accelerator of the scope-otel capture hot path.",
    .m_size = -1,
    .m_methods = speedups_functions,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&Ring_Type) < 0 || PyType_Ready(&HotPath_Type) < 0)
        return NULL;
    if (getenv("SCOPE_OTEL_SYSTEM_CLOCK") == NULL)
        calibrate();
    s_module = PyUnicode_InternFromString("__module__");
    s_dict = PyUnicode_InternFromString("__dict__");
    s_empty = PyUnicode_InternFromString("");
    s_slots = PyUnicode_InternFromString("__slots__");
    s_fields = PyUnicode_InternFromString("_fields");
    s_ev_suspend = PyUnicode_InternFromString("scope.suspend");
    s_ev_resume = PyUnicode_InternFromString("scope.resume");
    s_ev_state = PyUnicode_InternFromString("scope.state_change");
    s_ev_dropped = PyUnicode_InternFromString("scope.events_dropped");
    s_key_target = PyUnicode_InternFromString("scope.target");
    s_key_value = PyUnicode_InternFromString("scope.value");
    s_key_dropped = PyUnicode_InternFromString("scope.dropped");
    s_tb_lineno = PyUnicode_InternFromString("tb_lineno");
    exc_fallback = Py_BuildValue("(sss()nOO)", "BaseException", "builtins", "<unrepresentable exception>",
                                 (Py_ssize_t)0, Py_None, Py_None);
    if (s_module == NULL || s_dict == NULL || s_empty == NULL || s_slots == NULL || s_fields == NULL
        || s_ev_suspend == NULL || s_ev_resume == NULL || s_ev_state == NULL || s_ev_dropped == NULL
        || s_key_target == NULL || s_key_value == NULL || s_key_dropped == NULL || s_tb_lineno == NULL
        || exc_fallback == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    if (PyType_Ready(&Call_Type) < 0 || PyType_Ready(&Stack_Type) < 0 || PyType_Ready(&Probe_Type) < 0
        || PyType_Ready(&Delegation_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Ring", (PyObject *)&Ring_Type) < 0
        || PyModule_AddObjectRef(m, "HotPath", (PyObject *)&HotPath_Type) < 0
        || PyModule_AddObjectRef(m, "Call", (PyObject *)&Call_Type) < 0
        || PyModule_AddObjectRef(m, "Probe", (PyObject *)&Probe_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
