/*
 * sampler.c — the next token from one position's logits (see sampler.h for the semantics).
 *
 * Shape of the work, for a 49152-entry vocabulary on the engine thread: a few linear passes (clean the row,
 * optional log-sum-exp for logprobs, gather the finite candidates, exponentiate) and no full sort.
 *   top-k: the k best in one pass with a k-heap (most tokens cost one comparison with its root), or
 *          introselect for large k; only those k are exponentiated.
 *   top-p: the gather pass also sums probability mass per bucket of scaled logit, which bounds the nucleus
 *          (a best-first prefix) to the first buckets; the few candidates there go through a quickselect
 *          steered by mass instead of rank, which finds the exact nucleus in expected linear time and never
 *          sorts it.
 *   min-p: a filter, since it is relative to the best token, which top-k and top-p always keep.
 *   none of top-k / top-p (the common case): no candidate array at all; one vector pass (runtime/host_vec.h,
 *          sl_host_sample_weights) writes every weight and the weights' sums by chunk of 256, and the draw walks
 *          the chunk sums, then one chunk.
 * The order of candidates is total (probability, then lowest id first), so the kept set does not depend on
 * how a selection happened to pivot, and everything is deterministic: a (seed, stream) pair gives the same
 * tokens on every run.
 *
 * Per-call state lives in the scratch: a working copy of the logits, the candidate array, and occurrence counts
 * that are all zero between calls (each call zeroes exactly the entries it touched, so penalties cost
 * O(prompt + output), not O(vocabulary)).
 */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "host_vec.h"
#include "sl_util.h"

/* Below this temperature sampling is greedy: dividing by it would overflow the logits to infinities, and the
 * distribution is a point mass anyway (vLLM's _SAMPLING_EPS). */
#define SL_SAMPLE_GREEDY_TEMPERATURE 1e-5f
/* Below this many elements, insertion sort beats quicksort's partitioning. */
#define SL_SAMPLE_INSERTION_MAX 16
/* Up to this k, top-k keeps a heap of the best seen in one pass; beyond it, introselect. */
#define SL_SAMPLE_HEAP_K_MAX 1024
/* The top-p prefilter buckets candidates by scaled logit: SL_SAMPLE_BUCKETS buckets of equal width over
 * [-SL_SAMPLE_BUCKET_RANGE, 0]; lower ones (relative probability below e^-32 ~ 1e-14) share the last. 256
 * buckets of width 1/8 keep the bucket that holds the nucleus boundary down to a few percent of the tokens. */
#define SL_SAMPLE_BUCKETS 256
#define SL_SAMPLE_BUCKET_RANGE 32.0f
/* The largest vocabulary we accept: ids are int32 and the scratch is 16 bytes per entry (~4 GiB at 2^28). */
#define SL_SAMPLE_MAX_VOCAB (1 << 28)

typedef struct sl__cand {
    float v;    /* scaled logit (logit - max) / temperature, then its exp (unnormalised probability) */
    int32_t id;
} sl__cand;

struct sl_sampler_scratch {
    int n_vocab;
    float *logits;   /* [n_vocab] f32: this call's processed logits */
    sl__cand *cand;  /* [n_vocab] tokens still in the running, reordered by selection and sorting */
    uint32_t *count; /* [n_vocab] occurrences in prompt/output while a call runs; all zero between calls */
    float *weight;   /* [n_vocab] exp of the scaled logits (sl_host_sample_weights), for draws without top-k */
    float *chunk;    /* [ceil(n_vocab / SL_HOST_SAMPLE_CHUNK)] their sums by chunk */
    double bucket_mass[SL_SAMPLE_BUCKETS]; /* top-p prefilter: probability mass per scaled-logit bucket */
};

/* ---- rng ---------------------------------------------------------------------------------------------- */

static uint64_t sl__mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t sl__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void sl_rng_seed(sl_rng *r, uint64_t seed, uint64_t stream) {
    /* splitmix64 over the seed, each word xored with a hash of (stream, word): distinct streams of one seed get
     * unrelated states. The odd multiplier makes stream -> b injective. */
    uint64_t a = seed;
    uint64_t b = stream * 0xd1342543de82ef95ull + 0x2545f4914f6cdd1dull;
    for (int i = 0; i < 4; i++) {
        a += 0x9e3779b97f4a7c15ull; /* splitmix64's increment (the golden ratio) */
        r->s[i] = sl__mix64(a) ^ sl__mix64(b + (uint64_t)i * 0x9e3779b97f4a7c15ull);
    }
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* xoshiro's one forbidden state */
}

uint64_t sl_rng_next(sl_rng *r) {
    uint64_t *s = r->s;
    const uint64_t result = sl__rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = sl__rotl(s[3], 45);
    return result;
}

double sl_rng_uniform(sl_rng *r) { return (double)(sl_rng_next(r) >> 11) * 0x1.0p-53; }

/* ---- scratch ------------------------------------------------------------------------------------------ */

sl_status sl_sampler_scratch_create(int n_vocab, sl_sampler_scratch **out) {
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > SL_SAMPLE_MAX_VOCAB)
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: vocabulary size %d out of range", n_vocab);
    sl_sampler_scratch *s = sl__calloc(1, sizeof *s);
    if (!s) goto oom;
    s->n_vocab = n_vocab;
    s->logits = sl__malloc((size_t)n_vocab * sizeof *s->logits);
    s->cand = sl__malloc((size_t)n_vocab * sizeof *s->cand);
    s->count = sl__calloc((size_t)n_vocab, sizeof *s->count);
    s->weight = sl__malloc((size_t)n_vocab * sizeof *s->weight);
    s->chunk = sl__malloc(((size_t)n_vocab + SL_HOST_SAMPLE_CHUNK - 1) / SL_HOST_SAMPLE_CHUNK * sizeof *s->chunk);
    if (!s->logits || !s->cand || !s->count || !s->weight || !s->chunk) goto oom;
    *out = s;
    return SL_OK;
oom:
    sl_sampler_scratch_free(s);
    return sl__errorf(SL_OUT_OF_MEMORY, "sampler: out of memory for a %d-token vocabulary", n_vocab);
}

void sl_sampler_scratch_free(sl_sampler_scratch *s) {
    if (!s) return;
    free(s->logits);
    free(s->cand);
    free(s->count);
    free(s->weight);
    free(s->chunk);
    free(s);
}

/* ---- ordering of candidates: higher v first, then lower id (a total order) ------------------------------ */

static int sl__better(const sl__cand *a, const sl__cand *b) { return a->v > b->v || (a->v == b->v && a->id < b->id); }

static void sl__swap(sl__cand *a, sl__cand *b) {
    sl__cand t = *a;
    *a = *b;
    *b = t;
}

static void sl__insertion_sort(sl__cand *c, size_t lo, size_t hi) {
    for (size_t i = lo + 1; i < hi; i++) {
        sl__cand x = c[i];
        size_t j = i;
        while (j > lo && sl__better(&x, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/* Heap of c[lo, hi) with the worst element at the root, so heapsort yields best-first order. */
static void sl__sift_down(sl__cand *c, size_t lo, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && sl__better(&c[lo + child], &c[lo + child + 1])) child++;
        if (!sl__better(&c[lo + root], &c[lo + child])) return;
        sl__swap(&c[lo + root], &c[lo + child]);
        root = child;
    }
}

static void sl__heap_sort(sl__cand *c, size_t lo, size_t hi) {
    size_t n = hi - lo;
    for (size_t i = n / 2; i-- > 0;) sl__sift_down(c, lo, i, n);
    for (size_t end = n; end > 1; end--) {
        sl__swap(&c[lo], &c[lo + end - 1]);
        sl__sift_down(c, lo, 0, end - 1);
    }
}

/* Partitions c[lo, hi) (hi - lo >= 3) around a median-of-three pivot; returns the pivot's final index: better
 * elements before it, worse after. */
static size_t sl__partition(sl__cand *c, size_t lo, size_t hi) {
    size_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (sl__better(&c[mid], &c[lo])) sl__swap(&c[mid], &c[lo]);
    if (sl__better(&c[last], &c[lo])) sl__swap(&c[last], &c[lo]);
    if (sl__better(&c[last], &c[mid])) sl__swap(&c[last], &c[mid]);
    sl__swap(&c[mid], &c[last]); /* the median is the pivot, parked at the end */
    size_t store = lo;
    for (size_t i = lo; i < last; i++)
        if (sl__better(&c[i], &c[last])) sl__swap(&c[i], &c[store++]);
    sl__swap(&c[store], &c[last]);
    return store;
}

static size_t sl__depth_limit(size_t n) {
    size_t d = 0;
    while (n > 1) n >>= 1, d++;
    return 2 * d + 2; /* introsort's 2 log2(n): beyond it the pivots are being defeated */
}

/* Sorts c[lo, hi) best first (introsort). */
static void sl__cand_sort(sl__cand *c, size_t lo, size_t hi) {
    size_t depth = sl__depth_limit(hi - lo);
    while (hi - lo > SL_SAMPLE_INSERTION_MAX) {
        if (depth-- == 0) {
            sl__heap_sort(c, lo, hi);
            return;
        }
        size_t p = sl__partition(c, lo, hi);
        /* Recurse into the smaller side, loop on the larger: stack depth stays O(log n). */
        if (p - lo < hi - p - 1) {
            sl__cand_sort(c, lo, p);
            lo = p + 1;
        } else {
            sl__cand_sort(c, p + 1, hi);
            hi = p;
        }
    }
    sl__insertion_sort(c, lo, hi);
}

/* Rearranges c[lo, hi) so that c[lo, k) holds its k - lo best elements, in no particular order (introselect). */
static void sl__cand_select(sl__cand *c, size_t lo, size_t hi, size_t k) {
    size_t depth = sl__depth_limit(hi - lo);
    while (hi - lo > SL_SAMPLE_INSERTION_MAX && k > lo && k < hi) {
        if (depth-- == 0) {
            sl__heap_sort(c, lo, hi);
            return;
        }
        size_t p = sl__partition(c, lo, hi);
        if (p == k || p + 1 == k) return;
        if (p > k) hi = p;
        else lo = p + 1;
    }
    if (k > lo && k < hi) sl__insertion_sort(c, lo, hi);
}

/* Moves the k best of c[0, n) into c[0, k) (k < n) with a heap of the k best seen so far, worst at the root:
 * for small k almost every element costs one well-predicted comparison with the root, where quickselect would
 * partition the whole array several times. */
static void sl__cand_top_k_heap(sl__cand *c, size_t n, size_t k) {
    for (size_t i = k / 2; i-- > 0;) sl__sift_down(c, 0, i, k);
    for (size_t j = k; j < n; j++) {
        if (!sl__better(&c[j], &c[0])) continue;
        sl__swap(&c[0], &c[j]);
        sl__sift_down(c, 0, 0, k);
    }
}

/* ---- sampling ----------------------------------------------------------------------------------------- */

/* NaN is -inf (never chosen) and +inf the largest float (chosen, without poisoning softmax with inf - inf). */
static float sl__clean(float x) {
    x = x == x ? x : -INFINITY; /* written as selects, not calls, so the loops over the vocabulary vectorise */
    return x > FLT_MAX ? FLT_MAX : x;
}

static sl_status sl__check_ids(const int32_t *ids, size_t n, int n_vocab, const char *what) {
    if (n && !ids) return sl__errorf(SL_INVALID_ARGUMENT, "sampler: %zu %s tokens but no array", n, what);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab)
            return sl__errorf(SL_INVALID_ARGUMENT, "sampler: %s token %ld out of range [0, %d)", what, (long)ids[i],
                              n_vocab);
    return SL_OK;
}

static sl_status sl__check(const sl_sample_input *in, const sl_sampler_scratch *s) {
    const sl_sampling_params *p = in->params;
    if (!in->logits || !p) return sl__errorf(SL_INVALID_ARGUMENT, "sampler: no logits or no parameters");
    if (in->n_vocab <= 0 || in->n_vocab > s->n_vocab)
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: vocabulary size %d, scratch sized for %d", in->n_vocab,
                          s->n_vocab);
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: temperature %g must be >= 0", (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: top_p %g must be in (0, 1]", (double)p->top_p);
    if (p->top_k < 0) return sl__errorf(SL_INVALID_ARGUMENT, "sampler: top_k %d must be >= 0", p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: min_p %g must be in [0, 1]", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f) || isinf(p->repetition_penalty))
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: repetition_penalty %g must be > 0",
                          (double)p->repetition_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: presence/frequency penalties must be finite");
    if (in->n_top_logprobs < -1 || in->n_top_logprobs > SL_SAMPLE_MAX_TOP)
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: %d top logprobs asked, at most %d", in->n_top_logprobs,
                          SL_SAMPLE_MAX_TOP);
    if (p->n_logit_bias && !p->logit_bias)
        return sl__errorf(SL_INVALID_ARGUMENT, "sampler: %zu logit biases but no array", p->n_logit_bias);
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias[i].token < 0 || p->logit_bias[i].token >= in->n_vocab)
            return sl__errorf(SL_INVALID_ARGUMENT, "sampler: logit_bias token %ld out of range [0, %d)",
                              (long)p->logit_bias[i].token, in->n_vocab);
        if (!isfinite(p->logit_bias[i].bias))
            return sl__errorf(SL_INVALID_ARGUMENT, "sampler: logit_bias of token %ld is not finite",
                              (long)p->logit_bias[i].token);
    }
    sl_status st = sl__check_ids(in->prompt, in->n_prompt, in->n_vocab, "prompt");
    if (st == SL_OK) st = sl__check_ids(in->output, in->n_output, in->n_vocab, "output");
    if (st == SL_OK) st = sl__check_ids(in->banned, in->n_banned, in->n_vocab, "banned");
    return st;
}

/* Log-softmax of the raw (cleaned) logits: the sampled token's logprob is raw - lse; the k best go to out->top.
 * Returns lse (-inf if no logit is finite). */
static double sl__raw_logprobs(const float *raw, int n_vocab, int k, sl_sample_output *out) {
    float m = -INFINITY;
    for (int i = 0; i < n_vocab; i++) {
        float x = sl__clean(raw[i]);
        m = x > m ? x : m;
    }
    out->n_top = 0;
    if (m == -INFINITY) return -INFINITY;
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++) {
        float x = sl__clean(raw[i]);
        sum += (double)expf(x - m); /* exp(-inf) = 0 */
        if (k == 0 || x == -INFINITY) continue;
        /* Keep the k best in out->top, best first; ties keep the lower id first (it came first). */
        if (out->n_top == k && !(x > out->top[k - 1].logprob)) continue;
        int j = out->n_top < k ? out->n_top++ : k - 1;
        while (j > 0 && x > out->top[j - 1].logprob) {
            out->top[j] = out->top[j - 1];
            j--;
        }
        out->top[j].token = i;
        out->top[j].logprob = x;
    }
    double lse = (double)m + log(sum);
    for (int j = 0; j < out->n_top; j++) out->top[j].logprob = (float)((double)out->top[j].logprob - lse);
    return lse;
}

/* logit_bias, repetition / presence / frequency penalties and the ban, in that order, into s->logits. */
static void sl__process(const sl_sample_input *in, sl_sampler_scratch *s) {
    const sl_sampling_params *p = in->params;
    float *w = s->logits;
    uint32_t *count = s->count;
    sl_host_clean_logits(in->logits, w, in->n_vocab); /* sl__clean on every logit, vectorized */
    /* Every change below goes through sl__clean again: a bias, a penalty below 1 or a negative penalty can push a
     * finite logit to +inf, and the draws need no logit above FLT_MAX (their weights are relative to the max). */
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        float *x = &w[p->logit_bias[i].token];
        *x = sl__clean(*x + p->logit_bias[i].bias);
    }
    if (p->repetition_penalty != 1.0f) {
        /* Once per distinct token of prompt + output: count marks the ones done. */
        const float rp = p->repetition_penalty;
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *ids = pass ? in->output : in->prompt;
            size_t n = pass ? in->n_output : in->n_prompt;
            for (size_t i = 0; i < n; i++) {
                int32_t t = ids[i];
                if (count[t]) continue;
                count[t] = 1;
                w[t] = sl__clean(w[t] > 0.0f ? w[t] / rp : w[t] * rp);
            }
        }
        for (size_t i = 0; i < in->n_prompt; i++) count[in->prompt[i]] = 0;
        for (size_t i = 0; i < in->n_output; i++) count[in->output[i]] = 0;
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        for (size_t i = 0; i < in->n_output; i++) count[in->output[i]]++;
        for (size_t i = 0; i < in->n_output; i++) {
            int32_t t = in->output[i];
            if (!count[t]) continue; /* already applied */
            w[t] = sl__clean(w[t] - (p->presence_penalty + p->frequency_penalty * (float)count[t]));
            count[t] = 0;
        }
    }
    for (size_t i = 0; i < in->n_banned; i++) w[in->banned[i]] = -INFINITY;
}

/* The draw of a plain temperature (and min-p) distribution: the weights and their chunk sums from one vector
 * pass, then u * z located chunk by chunk and, inside its chunk, token by token; no candidate array. */
static int32_t sl__draw_all(const sl_sample_input *in, sl_rng *rng, sl_sampler_scratch *s, float m, float inv_t) {
    const int n = in->n_vocab, n_chunks = (n + SL_HOST_SAMPLE_CHUNK - 1) / SL_HOST_SAMPLE_CHUNK;
    const float *e = s->weight;
    const double z = sl_host_sample_weights(s->logits, n, m, inv_t, in->params->min_p, s->weight, s->chunk);
    const double u = sl_rng_uniform(rng) * z;
    double acc = 0.0;
    int k = 0;
    while (k < n_chunks - 1 && acc + (double)s->chunk[k] <= u) acc += (double)s->chunk[k++];
    const int j0 = k * SL_HOST_SAMPLE_CHUNK, j1 = j0 + SL_HOST_SAMPLE_CHUNK < n ? j0 + SL_HOST_SAMPLE_CHUNK : n;
    for (int j = j0; j < j1; j++) {
        acc += (double)e[j];
        if (u < acc) return j;
    }
    for (int j = j1; j-- > 0;) /* rounding left u at the very top of the chunk: the last token with any mass */
        if (e[j] > 0.0f) return j;
    return -1; /* unreachable: the best token's weight is exp(0) = 1 */
}

/* Rearranges c[0, n) so that c[0, keep) is the nucleus: the smallest best-first prefix whose mass reaches
 * target (never empty); returns keep and puts the prefix's mass in *mass. A quickselect steered by mass
 * instead of rank, so expected O(n) and no sort beyond the last small range. */
static size_t sl__cand_nucleus(sl__cand *c, size_t n, double target, double *mass) {
    size_t lo = 0, hi = n;
    double before = 0.0; /* mass of c[0, lo), all better than c[lo, hi); below target unless lo == 0 */
    size_t depth = sl__depth_limit(n);
    while (hi - lo > SL_SAMPLE_INSERTION_MAX && depth-- > 0) {
        size_t p = sl__partition(c, lo, hi);
        double left = 0.0;
        for (size_t j = lo; j < p; j++) left += c[j].v;
        if (before + left >= target && p > lo) { /* the boundary lies among the better ones */
            hi = p;
            continue;
        }
        before += left;
        if (before + c[p].v >= target) { /* the pivot completes the nucleus */
            *mass = before + c[p].v;
            return p + 1;
        }
        before += c[p].v;
        lo = p + 1;
    }
    sl__cand_sort(c, lo, hi); /* small, or the pivots were defeated (introsort falls back to heapsort) */
    for (size_t j = lo; j < hi; j++) {
        if (j > 0 && before >= target) {
            *mass = before;
            return j;
        }
        before += c[j].v;
    }
    *mass = before;
    return hi;
}

/* Temperature, top-k, top-p, min-p and the draw, over the processed logits. */
static int32_t sl__draw(const sl_sample_input *in, sl_rng *rng, sl_sampler_scratch *s) {
    const sl_sampling_params *p = in->params;
    const float *w = s->logits;
    sl__cand *c = s->cand;
    int32_t top = sl_host_argmax(w, in->n_vocab);
    if (top < 0) return -1;
    const float m = w[top] > FLT_MAX ? FLT_MAX : w[top], inv_t = 1.0f / p->temperature;
    const int select_k = p->top_k > 0 && p->top_k < in->n_vocab;
    if (!select_k && p->top_p >= 1.0f) return sl__draw_all(in, rng, s, m, inv_t);
    const int prefilter = !select_k && p->top_p < 1.0f;
    const float bucket_scale = SL_SAMPLE_BUCKETS / SL_SAMPLE_BUCKET_RANGE;
    double *mass = s->bucket_mass;
    if (prefilter) memset(mass, 0, sizeof s->bucket_mass);
    size_t n = 0;
    /* Without top-k every weight is needed: one vector pass (probabilities relative to the best token, whose
     * exp(0) is 1) gives them and their total z. */
    double z = select_k ? 0.0 : sl_host_sample_weights(w, in->n_vocab, m, inv_t, 0.0f, s->weight, s->chunk);
    for (int i = 0; i < in->n_vocab; i++) {
        if (!(w[i] > -INFINITY)) continue;
        float v = ((w[i] > FLT_MAX ? FLT_MAX : w[i]) - m) * inv_t; /* <= 0; the best is exactly 0 */
        if (!select_k) {
            const float e = s->weight[i];
            float b = -v * bucket_scale;
            mass[b < (float)(SL_SAMPLE_BUCKETS - 1) ? (int)b : SL_SAMPLE_BUCKETS - 1] += e;
            v = e;
        }
        c[n].v = v;
        c[n].id = i;
        n++;
    }
    if (select_k) { /* the k best by scaled logit, then exponentiate only those */
        size_t k = (size_t)p->top_k;
        if (k < n) {
            if (k <= SL_SAMPLE_HEAP_K_MAX) sl__cand_top_k_heap(c, n, k);
            else sl__cand_select(c, 0, n, k);
            n = k;
        }
        for (size_t j = 0; j < n; j++) {
            c[j].v = expf(c[j].v);
            z += c[j].v;
        }
    }
    if (p->top_p < 1.0f) {
        const double target = (double)p->top_p * z;
        if (prefilter) {
            /* The nucleus is a best-first prefix, so it lies within the buckets whose cumulative mass first
             * reaches the target; one more bucket absorbs rounding at bucket edges. Drop everything below. */
            double cum = 0.0;
            int b = 0;
            while (b < SL_SAMPLE_BUCKETS - 1 && (cum += mass[b]) < target) b++;
            if (b + 1 < SL_SAMPLE_BUCKETS - 1) {
                const float floor_v = expf(-(float)(b + 2) / bucket_scale);
                size_t kept = 0;
                for (size_t j = 0; j < n; j++)
                    if (c[j].v >= floor_v) c[kept++] = c[j];
                n = kept;
            }
        }
        n = sl__cand_nucleus(c, n, target, &z);
    }
    if (p->min_p > 0.0f) {
        size_t kept = 0;
        z = 0.0;
        for (size_t j = 0; j < n; j++) {
            if (c[j].v < p->min_p) continue; /* relative to the best token's 1 */
            c[kept++] = c[j];
            z += c[j].v;
        }
        n = kept;
    }
    SL_ASSERT(n > 0); /* the best token (v = 1) survives every filter */
    const double u = sl_rng_uniform(rng) * z;
    double acc = 0.0;
    for (size_t j = 0; j < n; j++) {
        acc += c[j].v;
        if (u < acc) return c[j].id;
    }
    for (size_t j = n; j-- > 0;) /* rounding left u at the very top: the last token with any mass */
        if (c[j].v > 0.0f) return c[j].id;
    return c[0].id;
}

sl_status sl_sample(const sl_sample_input *in, sl_rng *rng, sl_sampler_scratch *s, sl_sample_output *out) {
    sl_status st = sl__check(in, s);
    if (st != SL_OK) return st;
    out->token = -1;
    out->logprob = 0.0f;
    out->n_top = 0;
    double lse = in->n_top_logprobs >= 0 ? sl__raw_logprobs(in->logits, in->n_vocab, in->n_top_logprobs, out) : 0.0;
    sl__process(in, s);
    int32_t tok = in->params->temperature < SL_SAMPLE_GREEDY_TEMPERATURE ? sl_host_argmax(s->logits, in->n_vocab)
                                                                         : sl__draw(in, rng, s);
    if (tok < 0)
        return sl__errorf(SL_INVALID_ARGUMENT,
                          "sampler: no token has a finite logit (all NaN, -inf, or banned by logit_bias/min_tokens)");
    out->token = tok;
    if (in->n_top_logprobs >= 0) out->logprob = (float)((double)sl__clean(in->logits[tok]) - lse);
    return SL_OK;
}
