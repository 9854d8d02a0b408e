/* A compiled evaluator for one XGBoost binary:logistic forest (numerical and categorical
 * splits), built for bidfilter's one shape of work: K rows that differ only in the partner
 * column. Each tree is walked once per request; only at a split on the partner column does the
 * walk fork, carrying the set of partners (a 64-bit mask) down each side. Request-level work is
 * therefore done once per request, not K times.
 *
 * Semantics follow XGBoost's CPU predictor exactly (see scoring/forest.py, which builds the
 * arrays from the model's JSON and checks the result against XGBoost):
 *   numerical:   missing (NaN) -> default child; value < threshold -> left; else right
 *   categorical: missing -> default child; a negative or out-of-bitset category -> left;
 *                a category (truncated) in the split's set -> right; else left
 * Margins are summed in float32 from the base margin in tree order, as XGBoost does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define FLAG_DEFAULT_LEFT 1u
#define FLAG_CATEGORICAL 2u
#define MAX_DEPTH 256

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_nodes;
    Py_ssize_t n_trees;
    Py_ssize_t n_features;
    int partner_feature;
    float base_margin;
    int32_t *feature;   /* -1 for a leaf */
    float *value;       /* threshold, or the leaf value */
    int32_t *left;
    int32_t *right;
    uint8_t *flags;
    int32_t *cat_offset; /* into cat_bits, in 32-bit words */
    int32_t *cat_words;
    uint32_t *cat_bits;
    Py_ssize_t n_cat_bits;
    int32_t *roots;
    void *memory;
} Forest;

static inline int goes_left(const Forest *f, int32_t node, float x) {
    uint8_t flags = f->flags[node];
    if (isnan(x)) {
        return flags & FLAG_DEFAULT_LEFT;
    }
    if (flags & FLAG_CATEGORICAL) {
        if (x < 0.0f || x >= 2147483648.0f) {
            return 1;
        }
        uint32_t cat = (uint32_t)x; /* truncated, as XGBoost does */
        uint32_t word = cat >> 5;
        if (word >= (uint32_t)f->cat_words[node]) {
            return 1;
        }
        return !((f->cat_bits[f->cat_offset[node] + word] >> (cat & 31u)) & 1u);
    }
    return x < f->value[node];
}

static inline float sigmoid(float margin) { return 1.0f / (1.0f + expf(-margin)); }

/* Rows [0, k) share ``row`` except the partner column, which is ``partners[i]``; k <= 64. */
static void predict_group(const Forest *f, const float *row, const float *partners, int k,
                          float *acc) {
    int32_t stack_node[MAX_DEPTH];
    uint64_t stack_mask[MAX_DEPTH];
    const uint64_t all = k == 64 ? ~(uint64_t)0 : (((uint64_t)1 << k) - 1);
    const int32_t pf = f->partner_feature;
    for (int i = 0; i < k; i++) {
        acc[i] = f->base_margin;
    }
    for (Py_ssize_t t = 0; t < f->n_trees; t++) {
        int sp = 0;
        int32_t node = f->roots[t];
        uint64_t mask = all;
        for (;;) {
            int32_t feat = f->feature[node];
            if (feat < 0) {
                float leaf = f->value[node];
                uint64_t m = mask;
                while (m) {
                    acc[__builtin_ctzll(m)] += leaf;
                    m &= m - 1;
                }
                if (sp == 0) {
                    break;
                }
                sp--;
                node = stack_node[sp];
                mask = stack_mask[sp];
                continue;
            }
            if (feat != pf) {
                node = goes_left(f, node, row[feat]) ? f->left[node] : f->right[node];
                continue;
            }
            uint64_t lmask = 0, m = mask;
            while (m) {
                int i = __builtin_ctzll(m);
                if (goes_left(f, node, partners[i])) {
                    lmask |= (uint64_t)1 << i;
                }
                m &= m - 1;
            }
            uint64_t rmask = mask & ~lmask;
            if (lmask && rmask) {
                /* depth is checked at construction, so the stack cannot overflow */
                stack_node[sp] = f->right[node];
                stack_mask[sp] = rmask;
                sp++;
                node = f->left[node];
                mask = lmask;
            } else {
                node = lmask ? f->left[node] : f->right[node];
            }
        }
    }
}

static int get_buffer(PyObject *obj, Py_buffer *view, const char *name, Py_ssize_t itemsize,
                      int writable) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    if (view->itemsize != itemsize || view->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected items of %zd bytes", name, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Forest.predict_shared(row: float32[F], partners: float32[K], out: float64[K]) */
static PyObject *Forest_predict_shared(Forest *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "predict_shared(row, partners, out)");
        return NULL;
    }
    Py_buffer row, partners, out;
    if (get_buffer(args[0], &row, "row", 4, 0) < 0) {
        return NULL;
    }
    if (get_buffer(args[1], &partners, "partners", 4, 0) < 0) {
        PyBuffer_Release(&row);
        return NULL;
    }
    if (get_buffer(args[2], &out, "out", 8, 1) < 0) {
        PyBuffer_Release(&row);
        PyBuffer_Release(&partners);
        return NULL;
    }
    Py_ssize_t k = partners.len / 4;
    PyObject *result = NULL;
    if (row.len / 4 != self->n_features) {
        PyErr_Format(PyExc_ValueError, "row: %zd features, the model has %zd", row.len / 4,
                     self->n_features);
    } else if (out.len / 8 != k) {
        PyErr_SetString(PyExc_ValueError, "out: not one slot per partner");
    } else {
        const float *r = (const float *)row.buf;
        const float *p = (const float *)partners.buf;
        double *o = (double *)out.buf;
        float acc[64];
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t base = 0; base < k; base += 64) {
            int n = (int)(k - base < 64 ? k - base : 64);
            predict_group(self, r, p + base, n, acc);
            for (int i = 0; i < n; i++) {
                o[base + i] = sigmoid(acc[i]);
            }
        }
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&row);
    PyBuffer_Release(&partners);
    PyBuffer_Release(&out);
    return result;
}

/* Forest.predict_rows(rows: float32[N*F], out: float64[N]): independent rows, for checks. */
static PyObject *Forest_predict_rows(Forest *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "predict_rows(rows, out)");
        return NULL;
    }
    Py_buffer rows, out;
    if (get_buffer(args[0], &rows, "rows", 4, 0) < 0) {
        return NULL;
    }
    if (get_buffer(args[1], &out, "out", 8, 1) < 0) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    Py_ssize_t n = out.len / 8;
    PyObject *result = NULL;
    if (rows.len / 4 != n * self->n_features) {
        PyErr_SetString(PyExc_ValueError, "rows: not N x the model's feature count");
    } else {
        const float *r = (const float *)rows.buf;
        double *o = (double *)out.buf;
        const int pf = self->partner_feature;
        float acc;
        for (Py_ssize_t i = 0; i < n; i++) {
            const float *row = r + i * self->n_features;
            predict_group(self, row, pf >= 0 ? row + pf : row, 1, &acc);
            o[i] = sigmoid(acc);
        }
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&rows);
    PyBuffer_Release(&out);
    return result;
}

static void Forest_dealloc(Forest *self) {
    PyMem_Free(self->memory);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Copies a buffer argument into ``dest`` after checking its size. */
static int copy_array(PyObject *obj, const char *name, void *dest, Py_ssize_t count,
                      Py_ssize_t itemsize) {
    Py_buffer view;
    if (get_buffer(obj, &view, name, itemsize, 0) < 0) {
        return -1;
    }
    if (view.len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items, got %zd", name, count,
                     view.len / itemsize);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(dest, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return 0;
}

static Py_ssize_t buffer_count(PyObject *obj, const char *name, Py_ssize_t itemsize) {
    Py_buffer view;
    if (get_buffer(obj, &view, name, itemsize, 0) < 0) {
        return -1;
    }
    Py_ssize_t count = view.len / itemsize;
    PyBuffer_Release(&view);
    return count;
}

/* Every index in range, children after their parent (so walks end), depth under MAX_DEPTH. */
static int validate(Forest *f) {
    int32_t *depth = PyMem_Calloc((size_t)f->n_nodes, sizeof(int32_t));
    if (depth == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int ok = 1;
    for (Py_ssize_t t = 0; ok && t < f->n_trees; t++) {
        if (f->roots[t] < 0 || f->roots[t] >= f->n_nodes) {
            PyErr_Format(PyExc_ValueError, "roots[%zd] out of range", t);
            ok = 0;
        }
    }
    for (Py_ssize_t i = 0; ok && i < f->n_nodes; i++) {
        int32_t feat = f->feature[i];
        if (feat < 0) {
            continue;
        }
        if (feat >= f->n_features) {
            PyErr_Format(PyExc_ValueError, "node %zd splits on feature %d of %zd", i, feat,
                         f->n_features);
            ok = 0;
        } else if (f->left[i] <= i || f->left[i] >= f->n_nodes || f->right[i] <= i ||
                   f->right[i] >= f->n_nodes) {
            PyErr_Format(PyExc_ValueError, "node %zd has children out of order or range", i);
            ok = 0;
        } else if ((f->flags[i] & FLAG_CATEGORICAL) &&
                   (f->cat_offset[i] < 0 || f->cat_words[i] < 0 ||
                    (Py_ssize_t)f->cat_offset[i] + f->cat_words[i] > f->n_cat_bits)) {
            PyErr_Format(PyExc_ValueError, "node %zd has its categories out of range", i);
            ok = 0;
        } else if (depth[i] + 1 >= MAX_DEPTH) {
            PyErr_Format(PyExc_ValueError, "trees deeper than %d", MAX_DEPTH - 1);
            ok = 0;
        } else {
            depth[f->left[i]] = depth[i] + 1;
            depth[f->right[i]] = depth[i] + 1;
        }
    }
    PyMem_Free(depth);
    return ok ? 0 : -1;
}

/* Forest(feature, value, left, right, flags, cat_offset, cat_words, cat_bits, roots,
 *        n_features, partner_feature, base_margin) */
static PyObject *Forest_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *feature, *value, *left, *right, *flags, *cat_offset, *cat_words, *cat_bits, *roots;
    Py_ssize_t n_features;
    int partner_feature;
    float base_margin;
    static char *kwlist[] = {"feature",   "value",      "left",           "right",
                             "flags",     "cat_offset", "cat_words",      "cat_bits",
                             "roots",     "n_features", "partner_feature", "base_margin",
                             NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOOnif", kwlist, &feature, &value,
                                     &left, &right, &flags, &cat_offset, &cat_words, &cat_bits,
                                     &roots, &n_features, &partner_feature, &base_margin)) {
        return NULL;
    }
    Py_ssize_t n = buffer_count(feature, "feature", 4);
    Py_ssize_t n_bits = buffer_count(cat_bits, "cat_bits", 4);
    Py_ssize_t n_trees = buffer_count(roots, "roots", 4);
    if (n < 0 || n_bits < 0 || n_trees < 0) {
        return NULL;
    }
    if (n_features <= 0 || partner_feature < -1 || partner_feature >= n_features) {
        PyErr_SetString(PyExc_ValueError, "n_features or partner_feature out of range");
        return NULL;
    }
    Forest *self = (Forest *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    size_t bytes = (size_t)n * (4 + 4 + 4 + 4 + 1 + 4 + 4) + (size_t)n_bits * 4 +
                   (size_t)n_trees * 4 + 64;
    self->memory = PyMem_Calloc(1, bytes);
    if (self->memory == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    char *p = self->memory;
    self->feature = (int32_t *)p;
    p += n * 4;
    self->value = (float *)p;
    p += n * 4;
    self->left = (int32_t *)p;
    p += n * 4;
    self->right = (int32_t *)p;
    p += n * 4;
    self->cat_offset = (int32_t *)p;
    p += n * 4;
    self->cat_words = (int32_t *)p;
    p += n * 4;
    self->cat_bits = (uint32_t *)p;
    p += n_bits * 4;
    self->roots = (int32_t *)p;
    p += n_trees * 4;
    self->flags = (uint8_t *)p;
    self->n_nodes = n;
    self->n_trees = n_trees;
    self->n_cat_bits = n_bits;
    self->n_features = n_features;
    self->partner_feature = partner_feature;
    self->base_margin = base_margin;
    if (copy_array(feature, "feature", self->feature, n, 4) < 0 ||
        copy_array(value, "value", self->value, n, 4) < 0 ||
        copy_array(left, "left", self->left, n, 4) < 0 ||
        copy_array(right, "right", self->right, n, 4) < 0 ||
        copy_array(flags, "flags", self->flags, n, 1) < 0 ||
        copy_array(cat_offset, "cat_offset", self->cat_offset, n, 4) < 0 ||
        copy_array(cat_words, "cat_words", self->cat_words, n, 4) < 0 ||
        copy_array(cat_bits, "cat_bits", self->cat_bits, n_bits, 4) < 0 ||
        copy_array(roots, "roots", self->roots, n_trees, 4) < 0 || validate(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyMethodDef Forest_methods[] = {
    {"predict_shared", (PyCFunction)(void (*)(void))Forest_predict_shared, METH_FASTCALL,
     "predict_shared(row, partners, out): probabilities for one request x K partners"},
    {"predict_rows", (PyCFunction)(void (*)(void))Forest_predict_rows, METH_FASTCALL,
     "predict_rows(rows, out): probabilities for N independent rows"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ForestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bidfilter.scoring._forest.Forest",
    .tp_basicsize = sizeof(Forest),
    .tp_dealloc = (destructor)Forest_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled XGBoost forest; built by bidfilter.scoring.forest.",
    .tp_methods = Forest_methods,
    .tp_new = Forest_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_forest", "Compiled tree evaluation for bidfilter.", -1, NULL,
};

PyMODINIT_FUNC PyInit__forest(void) {
    if (PyType_Ready(&ForestType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Forest", (PyObject *)&ForestType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
