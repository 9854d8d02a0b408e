/* The binary-protocol codec's two hot functions in C: reading a `filter` call's args and
 * writing its reply. Everything else, and every unusual case, stays in binary.py.
 *
 * Both functions only take the happy path and return None whenever anything is not as
 * expected (a field out of place, an unknown field, a wrong type, bytes missing, a string that
 * is not UTF-8, a number out of range, an object of another type). The caller then runs the
 * pure-Python codec, which gives the answer or the error with the field named: one definition
 * of every error, and this file cannot disagree with it in anything but speed. Tests check
 * that both produce the same values and bytes.
 *
 * The structs are msgspec Structs whose fields are slots: `bind` reads each field's slot
 * offset from the type's member descriptors once, so a field is one pointer load here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#define TT_STOP 0
#define TT_BOOL 2
#define TT_DOUBLE 4
#define TT_I32 8
#define TT_I64 10
#define TT_STRING 11
#define TT_STRUCT 12
#define TT_LIST 15

#define VERSION_1_REPLY 0x80010002u

static PyObject *filter_request_type;
static PyTypeObject *filter_response_type;
static PyTypeObject *partner_decision_type;

enum {
    R_REQUEST_ID, R_DECISIONS, R_MODEL_VERSION, R_OUTCOME, R_SERVER_US, R_ERROR, R_CONTROL,
    R_LOGGED, R_COUNT
};
static const char *const response_fields[R_COUNT] = {
    "request_id", "decisions", "model_version", "outcome", "server_us", "error", "control",
    "logged",
};
static Py_ssize_t response_offsets[R_COUNT];

enum { D_PARTNER, D_PROBABILITY, D_SEND, D_EXPLORE, D_THRESHOLD, D_PROPENSITY, D_COUNT };
static const char *const decision_fields[D_COUNT] = {
    "partner", "bid_probability", "send", "explore", "threshold", "propensity",
};
static Py_ssize_t decision_offsets[D_COUNT];

static int slot_offsets(PyTypeObject *type, const char *const *names, int n, Py_ssize_t *out) {
    for (int i = 0; i < n; i++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, names[i]);
        if (descr == NULL) {
            return -1;
        }
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok) {
            out[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        }
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            return -1;
        }
    }
    return 0;
}

static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "bind(FilterRequest, FilterResponse, PartnerDecision) takes 3 types");
        return NULL;
    }
    if (slot_offsets((PyTypeObject *)args[1], response_fields, R_COUNT, response_offsets) < 0 ||
        slot_offsets((PyTypeObject *)args[2], decision_fields, D_COUNT, decision_offsets) < 0) {
        return NULL;
    }
    Py_XSETREF(filter_request_type, Py_NewRef(args[0]));
    Py_XSETREF(filter_response_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(partner_decision_type, (PyTypeObject *)Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

/* --- reading ------------------------------------------------------------------------------ */

static inline int32_t get_i32(const uint8_t *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     (uint32_t)p[3]);
}

static inline int16_t get_i16(const uint8_t *p) {
    return (int16_t)(((uint16_t)p[0] << 8) | (uint16_t)p[1]);
}

/* A length-prefixed string at p[*pos]: its start and length, or -1 if it does not fit. */
static inline Py_ssize_t take_string(const uint8_t *p, Py_ssize_t size, Py_ssize_t *pos) {
    if (size - *pos < 4) {
        return -1;
    }
    int32_t length = get_i32(p + *pos);
    *pos += 4;
    if (length < 0 || length > size - *pos) {
        return -1;
    }
    return length;
}

static PyObject *read_candidates(const uint8_t *p, Py_ssize_t size, Py_ssize_t *pos) {
    if (size - *pos < 5) {
        return NULL;
    }
    uint8_t etype = p[*pos];
    int32_t count = get_i32(p + *pos + 1);
    *pos += 5;
    if (count < 0 || (count && etype != TT_STRING) || (size - *pos) / 4 < count) {
        return NULL;
    }
    PyObject *list = PyList_New(count);
    if (list == NULL) {
        return NULL;
    }
    for (int32_t i = 0; i < count; i++) {
        Py_ssize_t length = take_string(p, size, pos);
        if (length < 0) {
            Py_DECREF(list);
            return NULL;
        }
        PyObject *item = PyUnicode_DecodeUTF8((const char *)p + *pos, length, NULL);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
        *pos += length;
    }
    return list;
}

/* read_filter_args(buf: bytes, pos: int) -> (FilterRequest, end) | None */
static PyObject *read_filter_args(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "read_filter_args(buf: bytes, pos: int)");
        return NULL;
    }
    if (filter_request_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() was not called");
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos < 0 || pos > size) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* args field 1: the FilterRequest struct */
    if (size - pos < 3 || p[pos] != TT_STRUCT || get_i16(p + pos + 1) != 1) {
        Py_RETURN_NONE;
    }
    pos += 3;
    PyObject *fields[3] = {NULL, Py_None, Py_None}; /* openrtb, candidates, deadline_ms */
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    PyObject *value = NULL;
    for (;;) {
        if (pos >= size) {
            goto fallback;
        }
        uint8_t ftype = p[pos];
        if (ftype == TT_STOP) {
            pos += 1;
            break;
        }
        if (size - pos < 3) {
            goto fallback;
        }
        int16_t fid = get_i16(p + pos + 1);
        pos += 3;
        int slot;
        if (fid == 1 && ftype == TT_STRING) {
            Py_ssize_t length = take_string(p, size, &pos);
            if (length < 0) {
                goto fallback;
            }
            value = PyBytes_FromStringAndSize((const char *)p + pos, length);
            pos += length;
            slot = 0;
        } else if (fid == 2 && ftype == TT_LIST) {
            value = read_candidates(p, size, &pos);
            slot = 1;
        } else if (fid == 3 && ftype == TT_I32) {
            if (size - pos < 4) {
                goto fallback;
            }
            value = PyLong_FromLong(get_i32(p + pos));
            pos += 4;
            slot = 2;
        } else {
            goto fallback; /* unknown field, or a known one with the wrong type */
        }
        if (value == NULL) {
            goto fallback;
        }
        Py_XSETREF(fields[slot], value); /* a repeated field: the last one wins */
        value = NULL;
    }
    /* the args struct ends right after its one field */
    if (fields[0] == NULL || pos >= size || p[pos] != TT_STOP) {
        goto fallback;
    }
    pos += 1;
    PyObject *request = PyObject_Vectorcall(filter_request_type, fields, 3, NULL);
    for (int i = 0; i < 3; i++) {
        Py_XDECREF(fields[i]);
    }
    if (request == NULL) {
        return NULL;
    }
    PyObject *end = PyLong_FromSsize_t(pos);
    if (end == NULL) {
        Py_DECREF(request);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, request, end);
    Py_DECREF(request);
    Py_DECREF(end);
    return result;

fallback:
    for (int i = 0; i < 3; i++) {
        Py_XDECREF(fields[i]);
    }
    PyErr_Clear(); /* a decoding error is the pure codec's to report */
    Py_RETURN_NONE;
}

/* --- writing ------------------------------------------------------------------------------ */

static inline PyObject *slot(PyObject *obj, Py_ssize_t offset) {
    return *(PyObject **)((char *)obj + offset);
}

static inline uint8_t *put_i32(uint8_t *out, uint32_t v) {
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
    return out + 4;
}

static inline uint8_t *put_i64(uint8_t *out, uint64_t v) {
    out = put_i32(out, (uint32_t)(v >> 32));
    return put_i32(out, (uint32_t)v);
}

static inline uint8_t *put_field(uint8_t *out, uint8_t ftype, int16_t fid) {
    out[0] = ftype;
    out[1] = (uint8_t)((uint16_t)fid >> 8);
    out[2] = (uint8_t)fid;
    return out + 3;
}

static inline uint8_t *put_double(uint8_t *out, double d) {
    uint64_t bits;
    memcpy(&bits, &d, 8);
    return put_i64(out, bits);
}

static inline uint8_t *put_string(uint8_t *out, const char *s, Py_ssize_t n) {
    out = put_i32(out, (uint32_t)n);
    memcpy(out, s, (size_t)n);
    return out + n;
}

/* A str's UTF-8 (cached in the str by CPython), or NULL with no error set if it has none or
 * ``obj`` is not a str (or an unset field: NULL). */
static const char *utf8(PyObject *obj, Py_ssize_t *size) {
    if (obj == NULL || !PyUnicode_CheckExact(obj)) {
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8AndSize(obj, size);
    if (s == NULL || *size > INT32_MAX) {
        PyErr_Clear();
        return NULL;
    }
    return s;
}

static inline int flag(PyObject *obj) {
    return obj == Py_True ? 1 : obj == Py_False ? 0 : -1;
}

typedef struct {
    const char *partner;
    Py_ssize_t partner_size;
    double probability;
    double threshold;
    double propensity;
    uint8_t send;
    uint8_t explore;
    uint8_t has_propensity;
} Decision;

/* Per decision: partner field (3 + 4 + n), probability (3 + 8), two bools (3 + 1 each),
 * threshold (3 + 8), STOP; and propensity (3 + 8) when set. */
#define DECISION_FIXED (7 + 11 + 4 + 4 + 11 + 1)
#define PROPENSITY_FIELD 11

/* write_filter_reply(seqid: int, response: FilterResponse, framed: bool) -> bytes | None */
static PyObject *write_filter_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "write_filter_reply(seqid, response, framed)");
        return NULL;
    }
    PyObject *response = args[1];
    if (filter_response_type == NULL || !Py_IS_TYPE(response, filter_response_type)) {
        Py_RETURN_NONE;
    }
    int overflow = 0;
    long seqid = PyLong_Check(args[0]) ? PyLong_AsLongAndOverflow(args[0], &overflow) : 0;
    if (!PyLong_Check(args[0]) || overflow || seqid < INT32_MIN || seqid > INT32_MAX) {
        Py_RETURN_NONE;
    }
    int framed = PyObject_IsTrue(args[2]);
    if (framed < 0) {
        return NULL;
    }
    Py_ssize_t id_size, version_size, error_size = 0;
    const char *request_id = utf8(slot(response, response_offsets[R_REQUEST_ID]), &id_size);
    const char *version = utf8(slot(response, response_offsets[R_MODEL_VERSION]), &version_size);
    PyObject *decisions = slot(response, response_offsets[R_DECISIONS]);
    PyObject *outcome_obj = slot(response, response_offsets[R_OUTCOME]);
    PyObject *server_us_obj = slot(response, response_offsets[R_SERVER_US]);
    PyObject *error_obj = slot(response, response_offsets[R_ERROR]);
    PyObject *control_obj = slot(response, response_offsets[R_CONTROL]);
    PyObject *logged_obj = slot(response, response_offsets[R_LOGGED]);
    if (request_id == NULL || version == NULL || decisions == NULL || !PyList_CheckExact(decisions) ||
        outcome_obj == NULL || !PyLong_Check(outcome_obj) || server_us_obj == NULL ||
        error_obj == NULL || control_obj == NULL || logged_obj == NULL) {
        Py_RETURN_NONE;
    }
    int control = control_obj == Py_None ? -1 : flag(control_obj); /* -1: absent */
    int logged = logged_obj == Py_None ? -1 : flag(logged_obj);
    if ((control_obj != Py_None && control < 0) || (logged_obj != Py_None && logged < 0)) {
        Py_RETURN_NONE;
    }
    long outcome = PyLong_AsLongAndOverflow(outcome_obj, &overflow);
    if (overflow || outcome < INT32_MIN || outcome > INT32_MAX) {
        Py_RETURN_NONE;
    }
    long long server_us = 0;
    int has_server_us = server_us_obj != Py_None;
    if (has_server_us) {
        if (!PyLong_Check(server_us_obj)) {
            Py_RETURN_NONE;
        }
        server_us = PyLong_AsLongLongAndOverflow(server_us_obj, &overflow);
        if (overflow) {
            Py_RETURN_NONE;
        }
    }
    const char *error = NULL;
    if (error_obj != Py_None && (error = utf8(error_obj, &error_size)) == NULL) {
        Py_RETURN_NONE;
    }

    Py_ssize_t n = PyList_GET_SIZE(decisions);
    if (n > INT32_MAX) {
        Py_RETURN_NONE;
    }
    Decision stack[64];
    Decision *items = n <= 64 ? stack : PyMem_Malloc((size_t)n * sizeof(Decision));
    if (items == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *result = Py_None;
    /* message header (4 + 4 + 6 + 4), result field 0 (3), request_id (3 + 4 + n), decisions
     * list header (3 + 5), model_version (3 + 4 + n), outcome (3 + 4), server_us (3 + 8),
     * error (3 + 4 + n), control (3 + 1), logged (3 + 1), STOP x2 */
    Py_ssize_t total = (framed ? 4 : 0) + 18 + 3 + 7 + id_size + 8 + 7 + version_size + 7 +
                       (has_server_us ? 11 : 0) + (error ? 7 + error_size : 0) +
                       (control >= 0 ? 4 : 0) + (logged >= 0 ? 4 : 0) + 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyList_GET_ITEM(decisions, i);
        if (!Py_IS_TYPE(d, partner_decision_type)) {
            goto done;
        }
        Decision *item = &items[i];
        PyObject *probability = slot(d, decision_offsets[D_PROBABILITY]);
        PyObject *threshold = slot(d, decision_offsets[D_THRESHOLD]);
        PyObject *partner = slot(d, decision_offsets[D_PARTNER]);
        PyObject *send = slot(d, decision_offsets[D_SEND]);
        PyObject *explore = slot(d, decision_offsets[D_EXPLORE]);
        PyObject *propensity = slot(d, decision_offsets[D_PROPENSITY]);
        if (partner == NULL || probability == NULL || threshold == NULL || send == NULL ||
            explore == NULL || propensity == NULL || !PyFloat_CheckExact(probability) ||
            !PyFloat_CheckExact(threshold) || flag(send) < 0 || flag(explore) < 0 ||
            (propensity != Py_None && !PyFloat_CheckExact(propensity))) {
            goto done;
        }
        item->partner = utf8(partner, &item->partner_size);
        if (item->partner == NULL) {
            goto done;
        }
        item->probability = PyFloat_AS_DOUBLE(probability);
        item->threshold = PyFloat_AS_DOUBLE(threshold);
        item->send = (uint8_t)flag(send);
        item->explore = (uint8_t)flag(explore);
        item->has_propensity = propensity != Py_None;
        item->propensity = item->has_propensity ? PyFloat_AS_DOUBLE(propensity) : 0.0;
        total += DECISION_FIXED + item->partner_size +
                 (item->has_propensity ? PROPENSITY_FIELD : 0);
    }
    if (total - (framed ? 4 : 0) > INT32_MAX) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        goto done;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    if (framed) {
        out = put_i32(out, (uint32_t)(total - 4));
    }
    out = put_i32(out, VERSION_1_REPLY);
    out = put_string(out, "filter", 6);
    out = put_i32(out, (uint32_t)seqid);
    out = put_field(out, TT_STRUCT, 0);
    out = put_field(out, TT_STRING, 1);
    out = put_string(out, request_id, id_size);
    out = put_field(out, TT_LIST, 2);
    *out++ = TT_STRUCT;
    out = put_i32(out, (uint32_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        const Decision *item = &items[i];
        out = put_field(out, TT_STRING, 1);
        out = put_string(out, item->partner, item->partner_size);
        out = put_field(out, TT_DOUBLE, 2);
        out = put_double(out, item->probability);
        out = put_field(out, TT_BOOL, 3);
        *out++ = item->send;
        out = put_field(out, TT_BOOL, 4);
        *out++ = item->explore;
        out = put_field(out, TT_DOUBLE, 5);
        out = put_double(out, item->threshold);
        if (item->has_propensity) {
            out = put_field(out, TT_DOUBLE, 6);
            out = put_double(out, item->propensity);
        }
        *out++ = TT_STOP;
    }
    out = put_field(out, TT_STRING, 3);
    out = put_string(out, version, version_size);
    out = put_field(out, TT_I32, 4);
    out = put_i32(out, (uint32_t)outcome);
    if (has_server_us) {
        out = put_field(out, TT_I64, 5);
        out = put_i64(out, (uint64_t)server_us);
    }
    if (error) {
        out = put_field(out, TT_STRING, 6);
        out = put_string(out, error, error_size);
    }
    if (control >= 0) {
        out = put_field(out, TT_BOOL, 7);
        *out++ = (uint8_t)control;
    }
    if (logged >= 0) {
        out = put_field(out, TT_BOOL, 8);
        *out++ = (uint8_t)logged;
    }
    *out++ = TT_STOP; /* FilterResponse */
    *out++ = TT_STOP; /* the result struct */
    assert(out == (uint8_t *)PyBytes_AS_STRING(result) + total);

done:
    if (items != stack) {
        PyMem_Free(items);
    }
    if (result == Py_None) {
        Py_RETURN_NONE;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(FilterRequest, FilterResponse, PartnerDecision): the struct types to read and build"},
    {"read_filter_args", (PyCFunction)(void (*)(void))read_filter_args, METH_FASTCALL,
     "read_filter_args(buf, pos) -> (FilterRequest, end), or None: let binary.py decide"},
    {"write_filter_reply", (PyCFunction)(void (*)(void))write_filter_reply, METH_FASTCALL,
     "write_filter_reply(seqid, response, framed) -> bytes, or None: let binary.py write it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastbinary",
    "The binary protocol's filter args reader and reply writer, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__fastbinary(void) { return PyModule_Create(&module); }
