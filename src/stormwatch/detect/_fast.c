/* Fast path of the first-tier scorer: tokenise, hash word/char n-grams, weighted sums, in one pass.
 *
 * Mirrors stormwatch/detect/features.py exactly (same tokens, hashes, windows and summation order,
 * so margins are bit-identical to the numpy reference; tests check it). Input texts must be
 * "prepared" (features.prepare_text): ASCII text as is, non-ASCII text as its normalised tokens
 * joined by spaces. Rule here: a token is a maximal run of bytes that are ASCII [A-Za-z0-9] or >= 0x80;
 * ASCII letters are lower-cased. The GIL is released while scoring.
 *
 * score(texts, weights, cat_weights, n_cats, bits, cat_bits, char_lo, char_hi, char_weight, window, stride,
 *       bias, cat_bias) -> (n_units, margins, cat_margins, owner, start, n_tokens)
 * weights: float32[2**bits]; cat_weights: float32[2**cat_bits * n_cats] (bucket-major) or None
 * (category heads use word features only, bucket = hash & (2**cat_bits - 1));
 * cat_bias: float64[n_cats] or None. Outputs are bytes: float64[n_units], float64[n_units*n_cats]
 * (or None), int64[n_units] x 3.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define M_FNV 0x01000193u
#define GOLD 0x9E3779B1u
#define SEED_UNI 0x2545F491u
#define SEED_BI 0x68E31DA4u
#define SEED_CHAR 0x1B873593u
#define MAX_CATS 32
#define MAX_N 8

static unsigned char LOW[256];
static unsigned char ISTOK[256];

static inline uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

typedef struct {
    void *p;
    size_t cap, elem;
} Vec;

static int vec_reserve(Vec *v, size_t n) {
    if (n <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < n) cap *= 2;
    void *q = realloc(v->p, cap * v->elem);
    if (!q) return -1;
    v->p = q;
    v->cap = cap;
    return 0;
}

typedef struct {
    const float *w;
    const float *cw; /* may be NULL */
    int nc;
    uint32_t mask, cmask;
    int lo, hi; /* lo == 0: no char n-grams */
    double char_weight;
    double bias;
    const double *cat_bias;
} Model;

typedef struct {
    Vec off, len, hash;      /* per token of the current text */
    Vec margins, cats, owner, start, ntok;  /* per unit, outputs */
    Vec pad;                 /* padded token bytes */
    size_t n_units;
} Work;

static void free_work(Work *k) {
    free(k->off.p); free(k->len.p); free(k->hash.p);
    free(k->margins.p); free(k->cats.p); free(k->owner.p); free(k->start.p); free(k->ntok.p);
    free(k->pad.p);
}

/* Score tokens [s, s+n) of one text as one unit. */
static int score_unit(const Model *m, Work *k, const unsigned char *text, Py_ssize_t s, Py_ssize_t n,
                      Py_ssize_t owner) {
    const int64_t *off = (const int64_t *)k->off.p;
    const int64_t *len = (const int64_t *)k->len.p;
    const uint32_t *ph = (const uint32_t *)k->hash.p;
    const float *w = m->w;
    const float *cw = m->cw;
    const int nc = m->nc;
    const uint32_t mask = m->mask;
    const uint32_t cmask = m->cmask;
    double s_uni = 0.0, s_bi = 0.0, s_c[MAX_N];
    double c_uni[MAX_CATS], c_bi[MAX_CATS];
    int nk = m->lo ? m->hi - m->lo + 1 : 0;
    for (int q = 0; q < MAX_N; q++) s_c[q] = 0.0;
    if (cw) {
        for (int c = 0; c < nc; c++) {
            c_uni[c] = 0.0;
            c_bi[c] = 0.0;
        }
    }
    for (Py_ssize_t j = s; j < s + n; j++) {
        uint32_t b = fmix32(ph[j] ^ SEED_UNI) & mask;
        s_uni += (double)w[b];
        if (cw) {
            const float *r = cw + (size_t)(b & cmask) * nc;
            for (int c = 0; c < nc; c++) c_uni[c] += (double)r[c];
        }
        if (j > s) {
            b = fmix32((ph[j - 1] * GOLD + ph[j]) ^ SEED_BI) & mask;
            s_bi += (double)w[b];
            if (cw) {
                const float *r = cw + (size_t)(b & cmask) * nc;
                for (int c = 0; c < nc; c++) c_bi[c] += (double)r[c];
            }
        }
        if (nk) {
            Py_ssize_t L = (Py_ssize_t)len[j] + 2;
            if (vec_reserve(&k->pad, (size_t)L) < 0) return -1;
            unsigned char *pb = (unsigned char *)k->pad.p;
            const unsigned char *t = text + off[j];
            pb[0] = ' ';
            for (Py_ssize_t i = 0; i < L - 2; i++) pb[i + 1] = LOW[t[i]];
            pb[L - 1] = ' ';
            for (int q = 0; q < nk; q++) {
                int nn = m->lo + q;
                uint32_t seed = SEED_CHAR + (uint32_t)nn;
                for (Py_ssize_t p = 0; p + nn <= L; p++) {
                    uint32_t h = pb[p];
                    for (int i = 1; i < nn; i++) h = h * M_FNV + pb[p + i];
                    b = fmix32(h ^ seed) & mask;
                    s_c[q] += (double)w[b];
                }
            }
        }
    }
    double scale = 1.0 / sqrt((double)(n > 1 ? n : 1));
    size_t u = k->n_units;
    if (vec_reserve(&k->margins, u + 1) < 0 || vec_reserve(&k->owner, u + 1) < 0 ||
        vec_reserve(&k->start, u + 1) < 0 || vec_reserve(&k->ntok, u + 1) < 0)
        return -1;
    double word = s_uni + s_bi;
    if (nk) {
        double ch = s_c[0];
        for (int q = 1; q < nk; q++) ch = ch + s_c[q];
        word = word + ch * m->char_weight;
    }
    ((double *)k->margins.p)[u] = word * scale + m->bias;
    if (cw) {
        if (vec_reserve(&k->cats, (u + 1) * nc) < 0) return -1;
        double *out = (double *)k->cats.p + u * nc;
        for (int c = 0; c < nc; c++) {
            out[c] = (c_uni[c] + c_bi[c]) * scale + (m->cat_bias ? m->cat_bias[c] : 0.0);
        }
    }
    ((int64_t *)k->owner.p)[u] = owner;
    ((int64_t *)k->start.p)[u] = s;
    ((int64_t *)k->ntok.p)[u] = n;
    k->n_units = u + 1;
    return 0;
}

static int score_text(const Model *m, Work *k, const unsigned char *t, Py_ssize_t n, Py_ssize_t idx,
                      Py_ssize_t window, Py_ssize_t stride) {
    Py_ssize_t nt = 0, i = 0;
    while (i < n) {
        while (i < n && !ISTOK[t[i]]) i++;
        if (i >= n) break;
        Py_ssize_t a = i;
        uint32_t h = 0;
        while (i < n && ISTOK[t[i]]) {
            h = h * M_FNV + LOW[t[i]];
            i++;
        }
        if (vec_reserve(&k->off, nt + 1) < 0 || vec_reserve(&k->len, nt + 1) < 0 ||
            vec_reserve(&k->hash, nt + 1) < 0)
            return -1;
        ((int64_t *)k->off.p)[nt] = a;
        ((int64_t *)k->len.p)[nt] = i - a;
        ((uint32_t *)k->hash.p)[nt] = h;
        nt++;
    }
    if (window <= 0 || nt <= window) return score_unit(m, k, t, 0, nt, idx);
    for (Py_ssize_t s = 0; s < nt - window; s += stride)
        if (score_unit(m, k, t, s, window, idx) < 0) return -1;
    return score_unit(m, k, t, nt - window, window, idx);
}

static PyObject *bytes_of(const void *p, size_t nbytes) {
    return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)nbytes);
}

static PyObject *fast_score(PyObject *self, PyObject *args) {
    PyObject *texts, *wobj, *cwobj, *cbobj;
    int nc, bits, cbits, lo, hi;
    double char_weight, bias;
    Py_ssize_t window, stride;
    if (!PyArg_ParseTuple(args, "OOOiiiiidnndO", &texts, &wobj, &cwobj, &nc, &bits, &cbits, &lo, &hi, &char_weight,
                          &window, &stride, &bias, &cbobj))
        return NULL;
    if (bits < 1 || bits > 30 || cbits < 1 || cbits > bits || nc < 0 || nc > MAX_CATS || lo < 0 || hi < lo || (lo && hi - lo + 1 > MAX_N) ||
        (window > 0 && stride <= 0)) {
        PyErr_SetString(PyExc_ValueError, "bad parameters");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(texts, "texts must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_buffer wv = {0}, cwv = {0}, cbv = {0};
    int have_cw = cwobj != Py_None, have_cb = cbobj != Py_None;
    PyObject *result = NULL;
    const unsigned char **ptr = NULL;
    Py_ssize_t *lens = NULL;
    Work k;
    memset(&k, 0, sizeof k);
    k.off.elem = k.len.elem = sizeof(int64_t);
    k.hash.elem = sizeof(uint32_t);
    k.margins.elem = k.cats.elem = sizeof(double);
    k.owner.elem = k.start.elem = k.ntok.elem = sizeof(int64_t);
    k.pad.elem = 1;
    size_t nb = (size_t)1 << bits;
    if (PyObject_GetBuffer(wobj, &wv, PyBUF_SIMPLE) < 0) goto done;
    if ((size_t)wv.len != nb * sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "weights must be float32[2**bits]");
        goto done;
    }
    if (have_cw) {
        if (PyObject_GetBuffer(cwobj, &cwv, PyBUF_SIMPLE) < 0) goto done;
        if ((size_t)cwv.len != ((size_t)1 << cbits) * (size_t)nc * sizeof(float)) {
            PyErr_SetString(PyExc_ValueError, "cat_weights must be float32[2**cat_bits * n_cats]");
            goto done;
        }
    }
    if (have_cb) {
        if (PyObject_GetBuffer(cbobj, &cbv, PyBUF_SIMPLE) < 0) goto done;
        if ((size_t)cbv.len != (size_t)nc * sizeof(double)) {
            PyErr_SetString(PyExc_ValueError, "cat_bias must be float64[n_cats]");
            goto done;
        }
    }
    ptr = (const unsigned char **)malloc(sizeof(*ptr) * (size_t)(n ? n : 1));
    lens = (Py_ssize_t *)malloc(sizeof(*lens) * (size_t)(n ? n : 1));
    if (!ptr || !lens) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = items[i];
        if (!PyUnicode_Check(o)) {
            PyErr_SetString(PyExc_TypeError, "texts must be str");
            goto done;
        }
        if (PyUnicode_IS_ASCII(o)) {
            ptr[i] = (const unsigned char *)PyUnicode_DATA(o);
            lens[i] = PyUnicode_GET_LENGTH(o);
        } else {
            Py_ssize_t sz;
            const char *u = PyUnicode_AsUTF8AndSize(o, &sz);
            if (!u) goto done;
            ptr[i] = (const unsigned char *)u;
            lens[i] = sz;
        }
    }
    Model m = {(const float *)wv.buf, have_cw ? (const float *)cwv.buf : NULL, have_cw ? nc : 0,
               (uint32_t)(nb - 1), (uint32_t)(((size_t)1 << cbits) - 1), lo, hi, char_weight, bias, have_cb ? (const double *)cbv.buf : NULL};
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !err; i++)
        if (score_text(&m, &k, ptr[i], lens[i], i, window, stride) < 0) err = 1;
    Py_END_ALLOW_THREADS
    if (err) {
        PyErr_NoMemory();
        goto done;
    }
    {
        size_t u = k.n_units;
        PyObject *cats = have_cw ? bytes_of(k.cats.p, u * (size_t)nc * sizeof(double)) : (Py_INCREF(Py_None), Py_None);
        result = Py_BuildValue("(nNNNNN)", (Py_ssize_t)u, bytes_of(k.margins.p, u * sizeof(double)), cats,
                               bytes_of(k.owner.p, u * sizeof(int64_t)), bytes_of(k.start.p, u * sizeof(int64_t)),
                               bytes_of(k.ntok.p, u * sizeof(int64_t)));
    }
done:
    free(ptr);
    free(lens);
    free_work(&k);
    if (wv.obj) PyBuffer_Release(&wv);
    if (cwv.obj) PyBuffer_Release(&cwv);
    if (cbv.obj) PyBuffer_Release(&cbv);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"score", fast_score, METH_VARARGS, "Score prepared texts (see module doc)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_fast",
                                    "C fast path of the first-tier scorer (see features.py).", -1, methods};

PyMODINIT_FUNC PyInit__fast(void) {
    for (int c = 0; c < 256; c++) {
        LOW[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        ISTOK[c] = (unsigned char)((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                   c >= 0x80);
    }
    return PyModule_Create(&moddef);
}
