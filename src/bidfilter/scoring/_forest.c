/* A compiled evaluator for one XGBoost binary:logistic forest (numerical and categorical
 * splits), built for bidfilter's one shape of work: K rows that differ only in the partner
 * column. Each tree is walked once per request; only at a split on the partner column does the
 * walk fork, carrying the set of partners (a 64-bit mask) down each side. Request-level work is
 * therefore done once per request, not K times.
 *
 * Per-partner columns (bidfilter's partner affinities) are the other exception: their value
 * differs by partner, so a split on one forks the walk the same way, each partner compared with
 * its own value, read from a block of one float32 per (column, partner code) passed with the
 * request.
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

/* One node in 16 bytes, so a walk touches one cache line per level. XGBoost allocates a node's
 * children as a pair, so the right child is always left + 1. */
typedef struct {
    uint32_t meta;  /* feature index | META_* flags */
    float value;    /* threshold, or the leaf value */
    int32_t left;
    int32_t cats;   /* categorical: offset in cat_bits of [word count, words...] */
} Node;

#define META_FEATURE 0x00FFFFFFu
#define META_DEFAULT_LEFT (1u << 24)
#define META_CATEGORICAL (1u << 25)
#define META_LEAF (1u << 26)
#define META_KEYED (1u << 27) /* a per-partner column; its block index is in ``cats`` */

/* Partner sets as 64-bit masks over partner *codes* ("code space"): bits 0..61 are codes, bit
 * 62 any code no split knows (negative or past every split's categories: always left), bit 63
 * a missing code (the default child). A split on the partner column then costs one AND: its
 * node holds the mask of codes that go left. Used when every split on the partner column is
 * categorical over codes below 62, which is every bidfilter model with up to 62 partners. */
#define CODE_SPACE 62
#define SLOT_UNKNOWN 62
#define SLOT_MISSING 63

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_nodes;
    Py_ssize_t n_trees;
    Py_ssize_t n_features;
    int partner_feature;
    float base_margin;
    Node *nodes;
    uint32_t *cat_bits;
    int32_t *roots;
    uint64_t *left_codes; /* per node; set for splits on the partner column in code space */
    int code_space;
    Py_ssize_t n_keyed; /* per-partner columns */
} Forest;

/* A per-partner column's value for the partner with code ``x`` (a float, as in the row):
 * ``keyed`` holds ``stride`` codes per column; a missing or unknown code reads as missing. */
static inline float keyed_value(const float *keyed, Py_ssize_t stride, int32_t column, float x) {
    if (isnan(x) || x < 0.0f || x >= (float)stride) {
        return NAN;
    }
    return keyed[(Py_ssize_t)column * stride + (Py_ssize_t)x];
}

static inline int goes_left(const Forest *f, const Node *node, float x) {
    uint32_t meta = node->meta;
    if (isnan(x)) {
        return (meta & META_DEFAULT_LEFT) != 0;
    }
    if (meta & META_CATEGORICAL) {
        if (x < 0.0f || x >= 2147483648.0f) {
            return 1;
        }
        uint32_t cat = (uint32_t)x; /* truncated, as XGBoost does */
        const uint32_t *bits = f->cat_bits + node->cats;
        uint32_t word = cat >> 5;
        if (word >= bits[0]) {
            return 1;
        }
        return !((bits[1 + word] >> (cat & 31u)) & 1u);
    }
    return x < node->value;
}

/* The leaf's value to the margin of every row (or code) in ``mask``. */
static inline void add_leaf(float *acc, uint64_t mask, float leaf) {
    while (mask) {
        acc[__builtin_ctzll(mask)] += leaf;
        mask &= mask - 1;
    }
}

static inline float sigmoid(float margin) { return 1.0f / (1.0f + expf(-margin)); }

/* Rows [0, k) share ``row`` except the partner column, which is ``partners[i]``, and the
 * per-partner columns, read from ``keyed`` (``NULL``: from the row, as any column); k <= 64. */
static void predict_group(const Forest *f, const float *row, const float *partners, int k,
                          const float *keyed, Py_ssize_t stride, float *acc) {
    int32_t stack_node[MAX_DEPTH];
    uint64_t stack_mask[MAX_DEPTH];
    const uint64_t all = k == 64 ? ~(uint64_t)0 : (((uint64_t)1 << k) - 1);
    const uint32_t pf = (uint32_t)f->partner_feature;
    const Node *nodes = f->nodes;
    for (int i = 0; i < k; i++) {
        acc[i] = f->base_margin;
    }
    for (Py_ssize_t t = 0; t < f->n_trees; t++) {
        int sp = 0;
        const Node *node = nodes + f->roots[t];
        uint64_t mask = all;
        for (;;) {
            uint32_t meta = node->meta;
            if (meta & META_LEAF) {
                add_leaf(acc, mask, node->value);
                if (sp == 0) {
                    break;
                }
                sp--;
                node = nodes + stack_node[sp];
                mask = stack_mask[sp];
                continue;
            }
            uint32_t feat = meta & META_FEATURE;
            int by_partner = feat == pf;
            if (!by_partner && !((meta & META_KEYED) && keyed != NULL)) {
                node = nodes + node->left + !goes_left(f, node, row[feat]);
                continue;
            }
            uint64_t lmask = 0, m = mask;
            while (m) {
                int i = __builtin_ctzll(m);
                float x = by_partner ? partners[i]
                                     : keyed_value(keyed, stride, node->cats, partners[i]);
                if (goes_left(f, node, x)) {
                    lmask |= (uint64_t)1 << i;
                }
                m &= m - 1;
            }
            uint64_t rmask = mask & ~lmask;
            if (lmask && rmask) {
                /* depth is checked at construction, so the stack cannot overflow */
                stack_node[sp] = node->left + 1;
                stack_mask[sp] = rmask;
                sp++;
                node = nodes + node->left;
                mask = lmask;
            } else {
                node = nodes + node->left + (lmask == 0);
            }
        }
    }
}

/* All K rows of one request in code space (see CODE_SPACE): each tree is walked once, and a
 * split on the partner column is one AND; margins are summed per code, then read per row. */
static void predict_codes(const Forest *f, const float *row, const float *partners,
                          Py_ssize_t k, const float *keyed, Py_ssize_t stride, double *out) {
    float acc[64];
    uint8_t slot_stack[256];
    uint8_t *slots = k <= 256 ? slot_stack : PyMem_RawMalloc((size_t)k);
    uint64_t wanted = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        float x = partners[i];
        int slot = isnan(x) ? SLOT_MISSING
                   : (x < 0.0f || x >= (float)CODE_SPACE) ? SLOT_UNKNOWN
                                                           : (int)x;
        if (slots != NULL) {
            slots[i] = (uint8_t)slot;
        }
        wanted |= (uint64_t)1 << slot;
    }
    for (int c = 0; c < 64; c++) {
        acc[c] = f->base_margin;
    }
    int32_t stack_node[MAX_DEPTH];
    uint64_t stack_mask[MAX_DEPTH];
    const uint32_t pf = (uint32_t)f->partner_feature;
    const Node *nodes = f->nodes;
    for (Py_ssize_t t = 0; t < f->n_trees; t++) {
        int sp = 0;
        int32_t at = f->roots[t];
        uint64_t mask = wanted;
        for (;;) {
            const Node *node = nodes + at;
            uint32_t meta = node->meta;
            if (meta & META_LEAF) {
                add_leaf(acc, mask, node->value);
                if (sp == 0) {
                    break;
                }
                sp--;
                at = stack_node[sp];
                mask = stack_mask[sp];
                continue;
            }
            uint32_t feat = meta & META_FEATURE;
            uint64_t lmask;
            if (feat == pf) {
                lmask = mask & f->left_codes[at];
            } else if (meta & META_KEYED) {
                /* slot c is code c; the unknown and missing slots read as missing */
                lmask = 0;
                uint64_t m = mask;
                while (m) {
                    int c = __builtin_ctzll(m);
                    float x = c < stride ? keyed[(Py_ssize_t)node->cats * stride + c] : NAN;
                    if (goes_left(f, node, x)) {
                        lmask |= (uint64_t)1 << c;
                    }
                    m &= m - 1;
                }
            } else {
                at = node->left + !goes_left(f, node, row[feat]);
                continue;
            }
            uint64_t rmask = mask & ~lmask;
            if (lmask && rmask) {
                stack_node[sp] = node->left + 1;
                stack_mask[sp] = rmask;
                sp++;
                at = node->left;
                mask = lmask;
            } else {
                at = node->left + (lmask == 0);
            }
        }
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        float x = partners[i];
        int slot = slots != NULL ? slots[i]
                   : isnan(x) ? SLOT_MISSING
                   : (x < 0.0f || x >= (float)CODE_SPACE) ? SLOT_UNKNOWN
                                                           : (int)x;
        out[i] = sigmoid(acc[slot]);
    }
    if (slots != slot_stack) {
        PyMem_RawFree(slots);
    }
}

static int get_buffer(PyObject *obj, Py_buffer *view, const char *name, Py_ssize_t itemsize,
                      int writable) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    /* bytes hold packed values (struct.pack: how the serving path builds a request's row) */
    int packed = view->itemsize == 1 && PyBytes_CheckExact(obj);
    if ((view->itemsize != itemsize && !packed) || view->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected items of %zd bytes", name, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Forest.predict_shared(row: float32[F], partners: float32[K], out: float64[K],
 *                       keyed: float32[n_keyed * codes] = b"") */
static PyObject *Forest_predict_shared(Forest *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "predict_shared(row, partners, out, keyed=b'')");
        return NULL;
    }
    Py_buffer row, partners, out, keyed_view;
    const float *keyed = NULL;
    Py_ssize_t stride = 0;
    if (nargs == 4) {
        if (get_buffer(args[3], &keyed_view, "keyed", 4, 0) < 0) {
            return NULL;
        }
        Py_ssize_t n = keyed_view.len / 4;
        if (self->n_keyed > 0) {
            stride = n / self->n_keyed;
        }
        if (self->n_keyed > 0 ? n % self->n_keyed != 0 || stride == 0 : n != 0) {
            PyErr_Format(PyExc_ValueError, "keyed: %zd values for %zd per-partner columns", n,
                         self->n_keyed);
            PyBuffer_Release(&keyed_view);
            return NULL;
        }
        keyed = (const float *)keyed_view.buf;
    } else if (self->n_keyed > 0) {
        PyErr_SetString(PyExc_ValueError, "keyed: the model has per-partner columns");
        return NULL;
    }
    if (get_buffer(args[0], &row, "row", 4, 0) < 0) {
        goto release_keyed;
    }
    if (get_buffer(args[1], &partners, "partners", 4, 0) < 0) {
        PyBuffer_Release(&row);
        goto release_keyed;
    }
    if (get_buffer(args[2], &out, "out", 8, 1) < 0) {
        PyBuffer_Release(&row);
        PyBuffer_Release(&partners);
        goto release_keyed;
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
        if (self->code_space) {
            predict_codes(self, r, p, k, keyed, stride, o);
        } else {
            for (Py_ssize_t base = 0; base < k; base += 64) {
                int n = (int)(k - base < 64 ? k - base : 64);
                predict_group(self, r, p + base, n, keyed, stride, acc);
                for (int i = 0; i < n; i++) {
                    o[base + i] = sigmoid(acc[i]);
                }
            }
        }
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&row);
    PyBuffer_Release(&partners);
    PyBuffer_Release(&out);
    if (nargs == 4) {
        PyBuffer_Release(&keyed_view);
    }
    return result;
release_keyed:
    if (nargs == 4) {
        PyBuffer_Release(&keyed_view);
    }
    return NULL;
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
            predict_group(self, row, pf >= 0 ? row + pf : row, 1, NULL, 0, &acc);
            o[i] = sigmoid(acc);
        }
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&rows);
    PyBuffer_Release(&out);
    return result;
}

static void Forest_dealloc(Forest *self) {
    PyMem_Free(self->nodes);
    PyMem_Free(self->cat_bits);
    PyMem_Free(self->roots);
    PyMem_Free(self->left_codes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The constructor's arrays, borrowed for the time of the call. */
enum { A_FEATURE, A_VALUE, A_LEFT, A_RIGHT, A_FLAGS, A_CAT_OFFSET, A_CAT_WORDS, A_CAT_BITS,
       A_ROOTS, N_ARRAYS };
static const char *array_names[N_ARRAYS] = {"feature",    "value",     "left",
                                            "right",      "flags",     "cat_offset",
                                            "cat_words",  "cat_bits",  "roots"};
static const Py_ssize_t array_itemsize[N_ARRAYS] = {4, 4, 4, 4, 1, 4, 4, 4, 4};

/* The left-going code mask of every split on the partner column, if all of them fit code
 * space; otherwise code space is off and predict_shared walks partner by partner. */
static int code_space_masks(Forest *f) {
    f->code_space = 0;
    if (f->partner_feature < 0) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < f->n_nodes; i++) {
        const Node *node = f->nodes + i;
        if (node->meta & META_LEAF || (node->meta & META_FEATURE) != (uint32_t)f->partner_feature) {
            continue;
        }
        if (!(node->meta & META_CATEGORICAL)) {
            return 0;
        }
        const uint32_t *bits = f->cat_bits + node->cats;
        for (uint32_t w = 0; w < bits[0]; w++) {
            uint32_t beyond = w * 32 >= CODE_SPACE ? bits[1 + w]
                              : w * 32 + 32 > CODE_SPACE ? bits[1 + w] >> (CODE_SPACE - w * 32)
                                                         : 0;
            if (beyond) {
                return 0; /* a category at or past code 62 is chosen */
            }
        }
    }
    f->left_codes = PyMem_Calloc((size_t)f->n_nodes, sizeof(uint64_t));
    if (f->left_codes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < f->n_nodes; i++) {
        const Node *node = f->nodes + i;
        if (node->meta & META_LEAF || (node->meta & META_FEATURE) != (uint32_t)f->partner_feature) {
            continue;
        }
        uint64_t left = (uint64_t)1 << SLOT_UNKNOWN;
        if (node->meta & META_DEFAULT_LEFT) {
            left |= (uint64_t)1 << SLOT_MISSING;
        }
        for (int c = 0; c < CODE_SPACE; c++) {
            if (goes_left(f, node, (float)c)) {
                left |= (uint64_t)1 << c;
            }
        }
        f->left_codes[i] = left;
    }
    f->code_space = 1;
    return 0;
}

/* Every index in range, children a pair after their parent (so walks end), categories in
 * range, depth under MAX_DEPTH, per-partner columns numerical; then the nodes packed. */
static int pack(Forest *f, Py_buffer *a, const int32_t *keyed_features) {
    const int32_t *feature = a[A_FEATURE].buf, *left = a[A_LEFT].buf, *right = a[A_RIGHT].buf;
    const int32_t *cat_offset = a[A_CAT_OFFSET].buf, *cat_words = a[A_CAT_WORDS].buf;
    const int32_t *roots = a[A_ROOTS].buf;
    const float *value = a[A_VALUE].buf;
    const uint8_t *flags = a[A_FLAGS].buf;
    const uint32_t *cat_bits = a[A_CAT_BITS].buf;
    Py_ssize_t n = f->n_nodes, n_bits = a[A_CAT_BITS].len / 4;
    Py_ssize_t n_cat = 0;
    for (Py_ssize_t t = 0; t < f->n_trees; t++) {
        if (roots[t] < 0 || roots[t] >= n) {
            PyErr_Format(PyExc_ValueError, "roots[%zd] out of range", t);
            return -1;
        }
    }
    int32_t *depth = PyMem_Calloc((size_t)n, sizeof(int32_t));
    if (depth == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int ok = 1;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        int32_t feat = feature[i];
        if (feat < 0) {
            continue;
        }
        if (feat >= f->n_features) {
            PyErr_Format(PyExc_ValueError, "node %zd splits on feature %d of %zd", i, feat,
                         f->n_features);
            ok = 0;
        } else if (left[i] <= i || left[i] >= n - 1 || right[i] != left[i] + 1) {
            PyErr_Format(PyExc_ValueError, "node %zd has children out of order or range", i);
            ok = 0;
        } else if ((flags[i] & FLAG_CATEGORICAL) &&
                   (cat_offset[i] < 0 || cat_words[i] < 0 ||
                    (Py_ssize_t)cat_offset[i] + cat_words[i] > n_bits)) {
            PyErr_Format(PyExc_ValueError, "node %zd has its categories out of range", i);
            ok = 0;
        } else if (keyed_features[feat] >= 0 && (flags[i] & FLAG_CATEGORICAL)) {
            PyErr_Format(PyExc_ValueError, "node %zd: a categorical split on a per-partner column",
                         i);
            ok = 0;
        } else if (depth[i] + 1 >= MAX_DEPTH) {
            PyErr_Format(PyExc_ValueError, "trees deeper than %d", MAX_DEPTH - 1);
            ok = 0;
        } else {
            depth[left[i]] = depth[i] + 1;
            depth[right[i]] = depth[i] + 1;
            if (flags[i] & FLAG_CATEGORICAL) {
                n_cat += 1 + cat_words[i];
            }
        }
    }
    PyMem_Free(depth);
    if (!ok) {
        return -1;
    }
    f->nodes = PyMem_Calloc((size_t)n, sizeof(Node));
    f->cat_bits = PyMem_Calloc((size_t)n_cat + 1, sizeof(uint32_t));
    f->roots = PyMem_Calloc((size_t)f->n_trees + 1, sizeof(int32_t));
    if (f->nodes == NULL || f->cat_bits == NULL || f->roots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(f->roots, roots, (size_t)f->n_trees * sizeof(int32_t));
    Py_ssize_t next_cat = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Node *node = f->nodes + i;
        node->value = value[i];
        if (feature[i] < 0) {
            node->meta = META_LEAF;
            continue;
        }
        node->meta = (uint32_t)feature[i] |
                     ((flags[i] & FLAG_DEFAULT_LEFT) ? META_DEFAULT_LEFT : 0u);
        node->left = left[i];
        if (flags[i] & FLAG_CATEGORICAL) {
            node->meta |= META_CATEGORICAL;
            node->cats = (int32_t)next_cat;
            f->cat_bits[next_cat] = (uint32_t)cat_words[i];
            memcpy(f->cat_bits + next_cat + 1, cat_bits + cat_offset[i],
                   (size_t)cat_words[i] * sizeof(uint32_t));
            next_cat += 1 + cat_words[i];
        } else if (keyed_features[feature[i]] >= 0) {
            node->meta |= META_KEYED;
            node->cats = keyed_features[feature[i]];
        }
    }
    return code_space_masks(f);
}

/* Forest(feature, value, left, right, flags, cat_offset, cat_words, cat_bits, roots,
 *        n_features, partner_feature, base_margin, keyed=()): ``keyed`` lists the per-partner
 *        columns (int32 feature indices), in the order of predict_shared's block. */
static PyObject *Forest_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *objects[N_ARRAYS];
    PyObject *keyed_object = NULL;
    Py_ssize_t n_features;
    int partner_feature;
    float base_margin;
    static char *kwlist[] = {"feature",   "value",      "left",           "right",
                             "flags",     "cat_offset", "cat_words",      "cat_bits",
                             "roots",     "n_features", "partner_feature", "base_margin",
                             "keyed",     NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOOnif|O", kwlist, &objects[0],
                                     &objects[1], &objects[2], &objects[3], &objects[4],
                                     &objects[5], &objects[6], &objects[7], &objects[8],
                                     &n_features, &partner_feature, &base_margin,
                                     &keyed_object)) {
        return NULL;
    }
    if (n_features <= 0 || n_features > (Py_ssize_t)META_FEATURE || partner_feature < -1 ||
        partner_feature >= n_features) {
        PyErr_SetString(PyExc_ValueError, "n_features or partner_feature out of range");
        return NULL;
    }
    Py_buffer arrays[N_ARRAYS];
    int held = 0;
    PyObject *result = NULL;
    Py_ssize_t n_keyed = 0;
    int32_t *keyed_features = PyMem_Malloc((size_t)n_features * sizeof(int32_t));
    if (keyed_features == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n_features; i++) {
        keyed_features[i] = -1;
    }
    if (keyed_object != NULL) {
        Py_buffer keyed;
        if (get_buffer(keyed_object, &keyed, "keyed", 4, 0) < 0) {
            goto done;
        }
        n_keyed = keyed.len / 4;
        const int32_t *columns = keyed.buf;
        int ok = 1;
        for (Py_ssize_t j = 0; ok && j < n_keyed; j++) {
            if (columns[j] < 0 || columns[j] >= n_features || columns[j] == partner_feature ||
                keyed_features[columns[j]] >= 0) {
                PyErr_Format(PyExc_ValueError, "keyed[%zd]: not a distinct feature", j);
                ok = 0;
            } else {
                keyed_features[columns[j]] = (int32_t)j;
            }
        }
        PyBuffer_Release(&keyed);
        if (!ok) {
            goto done;
        }
    }
    for (; held < N_ARRAYS; held++) {
        if (get_buffer(objects[held], &arrays[held], array_names[held], array_itemsize[held],
                       0) < 0) {
            goto done;
        }
    }
    Py_ssize_t n = arrays[A_FEATURE].len / 4;
    for (int i = A_VALUE; i < N_ARRAYS; i++) {
        if (i != A_CAT_BITS && i != A_ROOTS && arrays[i].len / array_itemsize[i] != n) {
            PyErr_Format(PyExc_ValueError, "%s: expected %zd items, got %zd", array_names[i], n,
                         arrays[i].len / array_itemsize[i]);
            goto done;
        }
    }
    Forest *self = (Forest *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto done;
    }
    self->n_nodes = n;
    self->n_trees = arrays[A_ROOTS].len / 4;
    self->n_features = n_features;
    self->partner_feature = partner_feature;
    self->base_margin = base_margin;
    self->n_keyed = n_keyed;
    if (pack(self, arrays, keyed_features) < 0) {
        Py_DECREF(self);
        goto done;
    }
    result = (PyObject *)self;
done:
    for (int i = 0; i < held; i++) {
        PyBuffer_Release(&arrays[i]);
    }
    PyMem_Free(keyed_features);
    return result;
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

/* --- thresholds and exploration (decide.py's loop, for one request's K candidates) ---------- */

static uint32_t crc_table[256];
static PyObject *sent_for_sure; /* 1.0: the propensity of a candidate at or over its cutoff */

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[n] = c;
    }
}

/* zlib.crc32(data, value): the CRC-32 that decide.py's pure path computes. */
static uint32_t crc32_of(const unsigned char *data, Py_ssize_t n, uint32_t value) {
    uint32_t c = value ^ 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) {
        c = crc_table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

/* decide(scores, cutoffs, thresholds, names, keys, seed, probabilities, decision_type)
 *   -> (decisions, send, explore)
 * Per candidate i: send = scores[i] >= cutoffs[i], with propensity 1.0; a candidate not sent has
 * propensity probabilities[i], and is explored (and sent) when crc32(keys[i], seed) <
 * probabilities[i] * 2**32; decisions[i] = decision_type(names[i], scores[i], send, explore,
 * thresholds[i], propensity). scores and cutoffs are float64 buffers, the rest lists of length K
 * (probabilities of floats). */
static PyObject *decide(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyList_CheckExact(args[2]) || !PyList_CheckExact(args[3]) ||
        !PyList_CheckExact(args[4]) || !PyList_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "decide(scores, cutoffs, thresholds: list, names: list, keys: list, "
                        "seed, probabilities: list, decision_type)");
        return NULL;
    }
    PyObject *thresholds = args[2], *names = args[3], *keys = args[4], *decision = args[7];
    PyObject *probabilities = args[6];
    unsigned long seed = PyLong_AsUnsignedLong(args[5]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer scores, cutoffs;
    if (get_buffer(args[0], &scores, "scores", 8, 0) < 0) {
        return NULL;
    }
    if (get_buffer(args[1], &cutoffs, "cutoffs", 8, 0) < 0) {
        PyBuffer_Release(&scores);
        return NULL;
    }
    Py_ssize_t k = scores.len / 8;
    PyObject *result = NULL, *decisions = NULL, *send = NULL, *explore = NULL;
    if (cutoffs.len / 8 != k || PyList_GET_SIZE(thresholds) != k || PyList_GET_SIZE(names) != k ||
        PyList_GET_SIZE(keys) != k || PyList_GET_SIZE(probabilities) != k) {
        PyErr_Format(PyExc_ValueError, "decide: every argument needs %zd items", k);
        goto done;
    }
    decisions = PyList_New(k);
    send = PyList_New(k);
    explore = PyList_New(k);
    if (decisions == NULL || send == NULL || explore == NULL) {
        goto done;
    }
    const double *score = scores.buf, *cutoff = cutoffs.buf;
    for (Py_ssize_t i = 0; i < k; i++) {
        int sent = score[i] >= cutoff[i];
        int explored = 0;
        PyObject *propensity = sent_for_sure;
        if (!sent) {
            propensity = PyList_GET_ITEM(probabilities, i);
            if (!PyFloat_CheckExact(propensity)) {
                PyErr_SetString(PyExc_TypeError, "decide: probabilities must be floats");
                goto done;
            }
            double limit = PyFloat_AS_DOUBLE(propensity) * 4294967296.0;
            if (limit > 0) {
                PyObject *key = PyList_GET_ITEM(keys, i);
                if (!PyBytes_CheckExact(key)) {
                    PyErr_SetString(PyExc_TypeError, "decide: keys must be bytes");
                    goto done;
                }
                uint32_t draw = crc32_of((const unsigned char *)PyBytes_AS_STRING(key),
                                         PyBytes_GET_SIZE(key), (uint32_t)seed);
                explored = sent = (double)draw < limit;
            }
        }
        PyObject *fields[6];
        fields[0] = PyList_GET_ITEM(names, i);
        fields[1] = PyFloat_FromDouble(score[i]);
        fields[2] = sent ? Py_True : Py_False;
        fields[3] = explored ? Py_True : Py_False;
        fields[4] = PyList_GET_ITEM(thresholds, i);
        fields[5] = propensity;
        if (fields[1] == NULL) {
            goto done;
        }
        PyObject *item = PyObject_Vectorcall(decision, fields, 6, NULL);
        Py_DECREF(fields[1]);
        if (item == NULL) {
            goto done;
        }
        PyList_SET_ITEM(decisions, i, item);
        PyList_SET_ITEM(send, i, Py_NewRef(fields[2]));
        PyList_SET_ITEM(explore, i, Py_NewRef(fields[3]));
    }
    result = PyTuple_Pack(3, decisions, send, explore);
done:
    Py_XDECREF(decisions);
    Py_XDECREF(send);
    Py_XDECREF(explore);
    PyBuffer_Release(&scores);
    PyBuffer_Release(&cutoffs);
    return result;
}

static PyMethodDef module_methods[] = {
    {"decide", (PyCFunction)(void (*)(void))decide, METH_FASTCALL,
     "decide(scores, cutoffs, thresholds, names, keys, seed, probabilities, decision_type)"
     " -> (decisions, send, explore)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_forest",
    "Compiled tree evaluation and thresholding for bidfilter.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__forest(void) {
    crc_init();
    if (sent_for_sure == NULL && (sent_for_sure = PyFloat_FromDouble(1.0)) == NULL) {
        return NULL;
    }
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
