/*
 * k2.venues._scan: a fast path for the common shapes of trade frames.
 *
 * scan(kind, frames, adv_side_is_maker) reads each frame once, without building Python objects, and writes
 * trade columns as Arrow-ready buffers: frame index (int32), native symbol (utf8 data + int32 offsets),
 * trade id (uint64), price and quantity (decimal128(38, 18) as little-endian 128-bit integers), aggressor
 * sold (uint8) and exchange time (int64 microseconds, UTC).
 *
 * It accepts a frame only when the frame is exactly what it understands: valid JSON, the documented keys with
 * the documented types (in any order, unknown keys skipped), no escapes in the strings it keeps, decimal text
 * without sign or exponent and at most 18 fractional digits, RFC3339 times. Anything else (control frames,
 * unusual spellings, bad values) is marked for the general Python path (msgspec), which decides between
 * trade, control frame, ignored frame and dead letter. So this file changes speed, never results; the tests
 * check both paths give the same trades.
 *
 * Value checks that need context (positive prices, time ranges, known instruments) stay in Python
 * (k2.venues.base.finalize_trades), the one place that writes dead-letter reasons.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(K2_NO_SIMD)
#include <immintrin.h> /* SSE2 is part of x86-64; SSSE3 is checked at run time (unescape16) */
#define K2_X86 1
#endif

typedef __int128 i128;

enum { K_BINANCE = 1, K_KRAKEN = 2, K_COINBASE = 3 };

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 1;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *q = realloc(b->p, (size_t)cap);
    if (!q) return 0;
    b->p = q;
    b->cap = cap;
    return 1;
}

static inline int buf_put(buf_t *b, const void *src, Py_ssize_t n) {
    if (!buf_reserve(b, n)) return 0;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 1;
}

typedef struct {
    buf_t idx, sym, symoff, tid, price, qty, sell, ts;
    Py_ssize_t n;
    int32_t symlen;
} cols_t;

typedef struct {
    Py_ssize_t idx, sym, symoff, tid, price, qty, sell, ts, n;
    int32_t symlen;
} mark_t;

static void mark(cols_t *c, mark_t *m) {
    m->idx = c->idx.len; m->sym = c->sym.len; m->symoff = c->symoff.len; m->tid = c->tid.len;
    m->price = c->price.len; m->qty = c->qty.len; m->sell = c->sell.len; m->ts = c->ts.len;
    m->n = c->n; m->symlen = c->symlen;
}

static void rollback(cols_t *c, const mark_t *m) {
    c->idx.len = m->idx; c->sym.len = m->sym; c->symoff.len = m->symoff; c->tid.len = m->tid;
    c->price.len = m->price; c->qty.len = m->qty; c->sell.len = m->sell; c->ts.len = m->ts;
    c->n = m->n; c->symlen = m->symlen;
}

/* one trade as read from the wire */
typedef struct {
    const char *sym;
    Py_ssize_t symn;
    uint64_t tid;
    i128 price, qty;
    int sell;
    int64_t ts_us;
} rec_t;

static void free_all(buf_t **bufs, int n) {
    for (int i = 0; i < n; i++) {
        free(bufs[i]->p);
        bufs[i]->p = NULL;
        bufs[i]->len = bufs[i]->cap = 0;
    }
}

static void cols_free(cols_t *c) {
    buf_t *all[] = {&c->idx, &c->sym, &c->symoff, &c->tid, &c->price, &c->qty, &c->sell, &c->ts};
    free_all(all, 8);
}

static int emit(cols_t *c, int32_t frame, const rec_t *r) {
    int32_t off;
    uint8_t s = (uint8_t)r->sell;
    if (c->n == 0 && c->symoff.len == 0) {
        off = 0;
        if (!buf_put(&c->symoff, &off, 4)) return 0;
    }
    if (!buf_put(&c->idx, &frame, 4) || !buf_put(&c->sym, r->sym, r->symn)) return 0;
    c->symlen += (int32_t)r->symn;
    off = c->symlen;
    if (!buf_put(&c->symoff, &off, 4) || !buf_put(&c->tid, &r->tid, 8) || !buf_put(&c->price, &r->price, 16) ||
        !buf_put(&c->qty, &r->qty, 16) || !buf_put(&c->sell, &s, 1) || !buf_put(&c->ts, &r->ts_us, 8))
        return 0;
    c->n++;
    return 1;
}

/* ---------------------------------------------------------------- JSON cursor */

typedef struct {
    const char *p, *end;
} cur_t;

static inline void ws(cur_t *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static inline int expect(cur_t *c, char ch) {
    ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static inline int peek(cur_t *c) {
    ws(c);
    return c->p < c->end ? (unsigned char)*c->p : -1;
}

/* a string with no escapes and no control characters; returns its bytes */
static int str_plain(cur_t *c, const char **s, Py_ssize_t *n) {
    if (!expect(c, '"')) return 0;
    const char *start = c->p;
#ifdef K2_X86
    /* sixteen bytes a step: the loop below mispredicts its exit once per string, and frames are mostly short
       strings (keys, symbols, ids) */
    const __m128i quo = _mm_set1_epi8('"'), bsl = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
    while (c->end - c->p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)c->p);
        __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quo), _mm_cmpeq_epi8(v, bsl)),
                                    _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v));
        unsigned m = (unsigned)_mm_movemask_epi8(stop);
        if (m) {
            const char *hit = c->p + __builtin_ctz(m);
            if (*hit != '"') return 0;
            *s = start;
            *n = hit - start;
            c->p = hit + 1;
            return 1;
        }
        c->p += 16;
    }
#endif
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *s = start;
            *n = c->p - start;
            c->p++;
            return 1;
        }
        if (ch == '\\' || ch < 0x20) return 0;
        c->p++;
    }
    return 0;
}

static int skip_value(cur_t *c, int depth);

static int skip_string(cur_t *c) {
    if (!expect(c, '"')) return 0;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            c->p++;
            return 1;
        }
        if (ch < 0x20) return 0;
        if (ch == '\\') {
            if (c->p + 1 >= c->end) return 0;
            char e = c->p[1];
            if (e == 'u') {
                if (c->p + 5 >= c->end) return 0;
                for (int k = 2; k < 6; k++) {
                    char h = c->p[k];
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F'))) return 0;
                }
                /* surrogates: leave the judgement to the Python path */
                if (c->p[2] == 'd' || c->p[2] == 'D') return 0;
                c->p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e)) return 0;
            c->p += 2;
            continue;
        }
        c->p++;
    }
    return 0;
}

/* JSON number grammar; sets *plain when it is a non-negative integer or decimal without exponent */
static int number_token(cur_t *c, const char **s, Py_ssize_t *n) {
    ws(c);
    const char *q = c->p, *start = c->p;
    if (q < c->end && *q == '-') q++;
    if (q >= c->end) return 0;
    if (*q == '0') q++;
    else if (*q >= '1' && *q <= '9') while (q < c->end && *q >= '0' && *q <= '9') q++;
    else return 0;
    if (q < c->end && *q == '.') {
        q++;
        if (q >= c->end || !(*q >= '0' && *q <= '9')) return 0;
        while (q < c->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < c->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < c->end && (*q == '+' || *q == '-')) q++;
        if (q >= c->end || !(*q >= '0' && *q <= '9')) return 0;
        while (q < c->end && *q >= '0' && *q <= '9') q++;
    }
    *s = start;
    *n = q - start;
    c->p = q;
    return 1;
}

static int skip_literal(cur_t *c, const char *lit) {
    size_t n = strlen(lit);
    ws(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return 0;
    c->p += n;
    return 1;
}

/* the exact bytes s at the cursor (no whitespace skipped); the literal layouts below are built from these */
static inline int lit(cur_t *c, const char *s, size_t n) {
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0) return 0;
    c->p += n;
    return 1;
}
#define LIT(c, s) lit((c), (s), sizeof(s) - 1)

static int skip_value(cur_t *c, int depth) {
    if (depth > 32) return 0;
    int ch = peek(c);
    const char *s;
    Py_ssize_t n;
    switch (ch) {
        case '"':
            return skip_string(c);
        case '{': {
            c->p++;
            if (expect(c, '}')) return 1;
            do {
                if (!skip_string(c) || !expect(c, ':') || !skip_value(c, depth + 1)) return 0;
            } while (expect(c, ','));
            return expect(c, '}');
        }
        case '[': {
            c->p++;
            if (expect(c, ']')) return 1;
            do {
                if (!skip_value(c, depth + 1)) return 0;
            } while (expect(c, ','));
            return expect(c, ']');
        }
        case 't':
            return skip_literal(c, "true");
        case 'f':
            return skip_literal(c, "false");
        case 'n':
            return skip_literal(c, "null");
        default:
            return number_token(c, &s, &n);
    }
}

/* object iteration: 1 = a key was read (cursor after ':'), 0 = end of object, -1 = error */
static int next_key(cur_t *c, int *first, const char **k, Py_ssize_t *kn) {
    if (*first) {
        *first = 0;
        if (expect(c, '}')) return 0;
    } else {
        if (expect(c, '}')) return 0;
        if (!expect(c, ',')) return -1;
    }
    if (!str_plain(c, k, kn)) return -1;
    if (!expect(c, ':')) return -1;
    return 1;
}

#define KEY(lit) (kn == (Py_ssize_t)(sizeof(lit) - 1) && memcmp(k, lit, sizeof(lit) - 1) == 0)
#define TEXT(s, n, lit) ((n) == (Py_ssize_t)(sizeof(lit) - 1) && memcmp((s), lit, sizeof(lit) - 1) == 0)

/* ---------------------------------------------------------------- values */

static int uint_token(cur_t *c, uint64_t *out) {
    const char *s;
    Py_ssize_t n;
    if (!number_token(c, &s, &n) || n == 0 || n > 20) return 0;
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static const i128 POW10[19] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL, 100000000LL, 1000000000LL,
    10000000000LL, 100000000000LL, 1000000000000LL, 10000000000000LL, 100000000000000LL,
    1000000000000000LL, 10000000000000000LL, 100000000000000000LL, 1000000000000000000LL};

/* unsigned decimal text -> value * 10^18; at most 20 integer and 18 fractional digits */
static int decimal_text(const char *s, Py_ssize_t n, i128 *out) {
    Py_ssize_t i = 0, nint = 0, nfrac = 0;
    i128 ip = 0, fp = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        ip = ip * 10 + (s[i] - '0');
        i++;
        nint++;
    }
    if (nint == 0 || nint > 20) return 0;
    if (i < n) {
        if (s[i] != '.') return 0;
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (nfrac == 18) return 0;
            fp = fp * 10 + (s[i] - '0');
            i++;
            nfrac++;
        }
        if (nfrac == 0 || i != n) return 0;
    }
    *out = ip * POW10[18] + fp * POW10[18 - nfrac];
    return 1;
}

static int decimal_string(cur_t *c, i128 *out) {
    const char *s;
    Py_ssize_t n;
    return str_plain(c, &s, &n) && decimal_text(s, n, out);
}

static int decimal_number(cur_t *c, i128 *out) {
    const char *s;
    Py_ssize_t n;
    return number_token(c, &s, &n) && decimal_text(s, n, out);
}

static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* RFC3339: YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM) -> µs since the epoch, extra digits truncated */
static int rfc3339(const char *s, Py_ssize_t n, int64_t *out) {
    int y, mo, d, h, mi, se;
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return 0;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) ||
        !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se))
        return 0;
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > dim[mo - 1] + (mo == 2 && leap)) return 0;
    Py_ssize_t i = 19;
    int64_t us = 0;
    if (i < n && s[i] == '.') {
        i++;
        int nf = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (nf < 6) us = us * 10 + (s[i] - '0');
            nf++;
            i++;
        }
        if (nf == 0 || nf > 9) return 0;
        for (int k = nf; k < 6; k++) us *= 10;
    }
    int64_t offset = 0;
    if (i < n && s[i] == 'Z') {
        i++;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59) return 0;
        offset = (oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
        i += 6;
    } else {
        return 0;
    }
    if (i != n) return 0;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    *out = secs * 1000000 + us;
    return 1;
}

static int time_string(cur_t *c, int64_t *out) {
    const char *s;
    Py_ssize_t n;
    return str_plain(c, &s, &n) && rfc3339(s, n, out);
}

static int end_of_frame(cur_t *c) {
    ws(c);
    return c->p == c->end;
}

/* ---------------------------------------------------------------- Binance */

enum { B_E = 1, B_S = 2, B_T = 4, B_P = 8, B_Q = 16, B_TT = 32, B_M = 64, B_ALL = 127 };

/*
 * The trade object in the layout Binance sends, {"e":"trade","E":..,"s":..,"t":..,"p":..,"q":..,"T":..,"m":..,"M":..}
 * without spaces, read as literals instead of key by key (with the other exchanges' literal layouts, the parsers
 * took ~25% less CPU on the replay benchmark's capture). Anything else (another order, spaces, more keys) returns 0
 * and the key loop reads the object from the start, so results never depend on this.
 */
static int binance_literal(cur_t *c, rec_t *r, uint64_t *T) {
    uint64_t E;
    if (!LIT(c, "{\"e\":\"trade\",\"E\":") || !uint_token(c, &E)) return 0;
    if (!LIT(c, ",\"s\":") || !str_plain(c, &r->sym, &r->symn)) return 0;
    if (!LIT(c, ",\"t\":") || !uint_token(c, &r->tid)) return 0;
    if (!LIT(c, ",\"p\":") || !decimal_string(c, &r->price)) return 0;
    if (!LIT(c, ",\"q\":") || !decimal_string(c, &r->qty)) return 0;
    if (!LIT(c, ",\"T\":") || !uint_token(c, T)) return 0;
    if (!LIT(c, ",\"m\":")) return 0;
    if (LIT(c, "true")) r->sell = 1;
    else if (LIT(c, "false")) r->sell = 0;
    else return 0;
    return LIT(c, ",\"M\":") && skip_value(c, 0) && LIT(c, "}");
}

/* the trade object key by key, in any order; the cursor is before its '{' */
static int binance_keys(cur_t *c, rec_t *r, uint64_t *T) {
    if (!expect(c, '{')) return 0;
    int first = 1, seen = 0, rc;
    const char *k, *s;
    Py_ssize_t kn, n;
    while ((rc = next_key(c, &first, &k, &kn)) == 1) {
        int bit = 0;
        if (KEY("e")) {
            if (!str_plain(c, &s, &n) || !TEXT(s, n, "trade")) return 0;
            bit = B_E;
        } else if (KEY("s")) {
            if (!str_plain(c, &r->sym, &r->symn)) return 0;
            bit = B_S;
        } else if (KEY("t")) {
            if (!uint_token(c, &r->tid)) return 0;
            bit = B_T;
        } else if (KEY("p")) {
            if (!decimal_string(c, &r->price)) return 0;
            bit = B_P;
        } else if (KEY("q")) {
            if (!decimal_string(c, &r->qty)) return 0;
            bit = B_Q;
        } else if (KEY("T")) {
            if (!uint_token(c, T)) return 0;
            bit = B_TT;
        } else if (KEY("m")) {
            if (skip_literal(c, "true")) r->sell = 1;
            else if (skip_literal(c, "false")) r->sell = 0;
            else return 0;
            bit = B_M;
        } else if (!skip_value(c, 0)) {
            return 0;
        }
        if (bit) {
            if (seen & bit) return 0; /* duplicate key: let the general path decide */
            seen |= bit;
        }
    }
    return rc == 0 && seen == B_ALL;
}

/* the trade object; the cursor is before its '{' */
static int binance_trade_obj(cur_t *c, rec_t *r) {
    uint64_t T = 0;
    cur_t save = *c;
    if (!binance_literal(c, r, &T)) {
        *c = save;
        memset(r, 0, sizeof *r);
        if (!binance_keys(c, r, &T)) return 0;
    }
    if (T > (uint64_t)INT64_MAX) return 0;
    /* ms unless the value is only plausible as µs (see binance/parse.py) */
    r->ts_us = T > 100000000000000ULL ? (int64_t)T : (int64_t)T * 1000;
    return 1;
}

static int binance_frame(cur_t *c, cols_t *out, int32_t frame) {
    rec_t r;
    memset(&r, 0, sizeof r);
    cur_t save = *c;
    if (peek(c) != '{') return 0;
    /* combined stream: {"stream": "...", "data": {...}} in either order */
    if (c->end - c->p > 10 && (memcmp(c->p, "{\"stream\"", 9) == 0 || memcmp(c->p, "{\"data\"", 7) == 0)) {
        c->p++;
        int first = 1, rc, have_stream = 0, have_data = 0;
        const char *k, *s;
        Py_ssize_t kn, n;
        while ((rc = next_key(c, &first, &k, &kn)) == 1) {
            if (KEY("stream")) {
                if (have_stream || !str_plain(c, &s, &n)) return 0;
                have_stream = 1;
            } else if (KEY("data")) {
                if (have_data || !binance_trade_obj(c, &r)) return 0;
                have_data = 1;
            } else if (!skip_value(c, 0)) {
                return 0;
            }
        }
        if (rc < 0 || !have_stream || !have_data || !end_of_frame(c)) return 0;
        return emit(out, frame, &r) ? 1 : -1;
    }
    *c = save;
    if (!binance_trade_obj(c, &r) || !end_of_frame(c)) return 0;
    return emit(out, frame, &r) ? 1 : -1;
}

/* ---------------------------------------------------------------- Kraken v2 */

enum { KR_SYM = 1, KR_SIDE = 2, KR_P = 4, KR_Q = 8, KR_ID = 16, KR_TS = 32, KR_ORD = 64, KR_REQ = 63 };

/* ,"side":"buy" or ,"side":"sell" at the cursor; *sell = 1 for "sell" (whose side that is, the caller knows) */
static int side_literal(cur_t *c, int *sell) {
    if (!LIT(c, ",\"side\":\"")) return 0;
    if (LIT(c, "buy\"")) *sell = 0;
    else if (LIT(c, "sell\"")) *sell = 1;
    else return 0;
    return 1;
}

/* a trade in Kraken's own key order (symbol side price qty ord_type trade_id timestamp), as binance_literal */
static int kraken_literal(cur_t *c, rec_t *r) {
    if (!LIT(c, "{\"symbol\":") || !str_plain(c, &r->sym, &r->symn)) return 0;
    if (!side_literal(c, &r->sell)) return 0;
    if (!LIT(c, ",\"price\":") || !decimal_number(c, &r->price)) return 0;
    if (!LIT(c, ",\"qty\":") || !decimal_number(c, &r->qty)) return 0;
    if (!LIT(c, ",\"ord_type\":") || !(LIT(c, "null") || (peek(c) == '"' && skip_string(c)))) return 0;
    if (!LIT(c, ",\"trade_id\":") || !uint_token(c, &r->tid)) return 0;
    return LIT(c, ",\"timestamp\":") && time_string(c, &r->ts_us) && LIT(c, "}");
}

static int kraken_item(cur_t *c, rec_t *r) {
    cur_t save = *c;
    if (kraken_literal(c, r)) return 1;
    *c = save;
    memset(r, 0, sizeof *r);
    if (!expect(c, '{')) return 0;
    int first = 1, seen = 0, rc;
    const char *k, *s;
    Py_ssize_t kn, n;
    while ((rc = next_key(c, &first, &k, &kn)) == 1) {
        int bit = 0;
        if (KEY("symbol")) {
            if (!str_plain(c, &r->sym, &r->symn)) return 0;
            bit = KR_SYM;
        } else if (KEY("side")) {
            if (!str_plain(c, &s, &n)) return 0;
            if (TEXT(s, n, "buy")) r->sell = 0;
            else if (TEXT(s, n, "sell")) r->sell = 1;
            else return 0;
            bit = KR_SIDE;
        } else if (KEY("price")) {
            if (!decimal_number(c, &r->price)) return 0;
            bit = KR_P;
        } else if (KEY("qty")) {
            if (!decimal_number(c, &r->qty)) return 0;
            bit = KR_Q;
        } else if (KEY("trade_id")) {
            if (!uint_token(c, &r->tid)) return 0;
            bit = KR_ID;
        } else if (KEY("timestamp")) {
            if (!time_string(c, &r->ts_us)) return 0;
            bit = KR_TS;
        } else if (KEY("ord_type")) {
            int ch = peek(c);
            if (ch == '"') {
                if (!skip_string(c)) return 0;
            } else if (!skip_literal(c, "null")) {
                return 0; /* the schema says str | null */
            }
            bit = KR_ORD;
        } else if (!skip_value(c, 0)) {
            return 0;
        }
        if (bit) {
            if (seen & bit) return 0;
            seen |= bit;
        }
    }
    return rc == 0 && (seen & KR_REQ) == KR_REQ;
}

static int kraken_frame(cur_t *c, cols_t *out, int32_t frame) {
    if (!expect(c, '{')) return 0;
    int first = 1, rc, have_channel = 0, have_type = 0, have_data = 0;
    const char *k, *s;
    Py_ssize_t kn, n;
    while ((rc = next_key(c, &first, &k, &kn)) == 1) {
        if (KEY("channel")) {
            if (have_channel || !str_plain(c, &s, &n) || !TEXT(s, n, "trade")) return 0;
            have_channel = 1;
        } else if (KEY("type")) {
            if (have_type || !str_plain(c, &s, &n) || !(TEXT(s, n, "update") || TEXT(s, n, "snapshot"))) return 0;
            have_type = 1;
        } else if (KEY("data")) {
            if (have_data || !expect(c, '[')) return 0;
            have_data = 1;
            if (!expect(c, ']')) {
                do {
                    rec_t r;
                    memset(&r, 0, sizeof r);
                    if (!kraken_item(c, &r)) return 0;
                    if (!emit(out, frame, &r)) return -1;
                } while (expect(c, ','));
                if (!expect(c, ']')) return 0;
            }
        } else if (!skip_value(c, 0)) {
            return 0;
        }
    }
    return rc == 0 && have_channel && have_type && have_data && end_of_frame(c);
}

/* ---------------------------------------------------------------- Coinbase */

enum { C_ID = 1, C_PROD = 2, C_P = 4, C_Q = 8, C_SIDE = 16, C_TIME = 32, C_ALL = 63 };

/* Exchange `match` fields (flat in the frame) or an Advanced `trades[]` item */
static int coinbase_field(cur_t *c, const char *k, Py_ssize_t kn, rec_t *r, int *seen, int advanced, int adv_maker,
                          int *handled) {
    const char *s;
    Py_ssize_t n;
    int bit = 0;
    *handled = 1;
    if (KEY("trade_id")) {
        if (advanced) {
            if (!str_plain(c, &s, &n) || n == 0 || n > 19) return 0;
            uint64_t v = 0;
            for (Py_ssize_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9') return 0;
                v = v * 10 + (uint64_t)(s[i] - '0');
            }
            r->tid = v;
        } else if (!uint_token(c, &r->tid)) {
            return 0;
        }
        bit = C_ID;
    } else if (KEY("product_id")) {
        if (!str_plain(c, &r->sym, &r->symn)) return 0;
        bit = C_PROD;
    } else if (KEY("price")) {
        if (!decimal_string(c, &r->price)) return 0;
        bit = C_P;
    } else if (KEY("size")) {
        if (!decimal_string(c, &r->qty)) return 0;
        bit = C_Q;
    } else if (KEY("side")) {
        if (!str_plain(c, &s, &n)) return 0;
        int maker_sold;
        if (advanced ? TEXT(s, n, "SELL") : TEXT(s, n, "sell")) maker_sold = 1;
        else if (advanced ? TEXT(s, n, "BUY") : TEXT(s, n, "buy")) maker_sold = 0;
        else return 0;
        /* Exchange feed: maker side -> the aggressor is the opposite. Advanced: the same unless configured. */
        r->sell = (!advanced || adv_maker) ? !maker_sold : maker_sold;
        bit = C_SIDE;
    } else if (KEY("time")) {
        if (!time_string(c, &r->ts_us)) return 0;
        bit = C_TIME;
    } else {
        *handled = 0;
        return 1;
    }
    if (*seen & bit) return 0;
    *seen |= bit;
    return 1;
}

static int coinbase_adv_trades(cur_t *c, cols_t *out, int32_t frame, int adv_maker) {
    if (!expect(c, '[')) return 0;
    if (expect(c, ']')) return 1;
    do {
        rec_t r;
        memset(&r, 0, sizeof r);
        if (!expect(c, '{')) return 0;
        int first = 1, seen = 0, rc, handled;
        const char *k;
        Py_ssize_t kn;
        while ((rc = next_key(c, &first, &k, &kn)) == 1) {
            if (!coinbase_field(c, k, kn, &r, &seen, 1, adv_maker, &handled)) return 0;
            if (!handled && !skip_value(c, 0)) return 0;
        }
        if (rc < 0 || seen != C_ALL) return 0;
        if (!emit(out, frame, &r)) return -1;
    } while (expect(c, ','));
    return expect(c, ']');
}

static int coinbase_events(cur_t *c, cols_t *out, int32_t frame, int adv_maker) {
    if (!expect(c, '[')) return 0;
    if (expect(c, ']')) return 1;
    do {
        if (!expect(c, '{')) return 0;
        int first = 1, rc, have_type = 0, have_trades = 0;
        const char *k, *s;
        Py_ssize_t kn, n;
        while ((rc = next_key(c, &first, &k, &kn)) == 1) {
            if (KEY("type")) {
                if (have_type || !str_plain(c, &s, &n) || !(TEXT(s, n, "update") || TEXT(s, n, "snapshot")))
                    return 0;
                have_type = 1;
            } else if (KEY("trades")) {
                if (have_trades) return 0;
                int t = coinbase_adv_trades(c, out, frame, adv_maker);
                if (t != 1) return t;
                have_trades = 1;
            } else if (!skip_value(c, 0)) {
                return 0;
            }
        }
        if (rc < 0 || !have_type || !have_trades) return 0;
    } while (expect(c, ','));
    return expect(c, ']');
}

/*
 * An Exchange `match` in Coinbase's own key order (type trade_id maker_order_id taker_order_id side size price
 * product_id sequence time), as binance_literal. `side` is the maker's: the aggressor is the other side.
 */
static int coinbase_literal(cur_t *c, rec_t *r) {
    if (!LIT(c, "{\"type\":\"") || !(LIT(c, "match\",") || LIT(c, "last_match\","))) return 0;
    if (!LIT(c, "\"trade_id\":") || !uint_token(c, &r->tid)) return 0;
    if (!LIT(c, ",\"maker_order_id\":") || !skip_value(c, 0)) return 0;
    if (!LIT(c, ",\"taker_order_id\":") || !skip_value(c, 0)) return 0;
    int maker_sold;
    if (!side_literal(c, &maker_sold)) return 0;
    r->sell = !maker_sold;
    if (!LIT(c, ",\"size\":") || !decimal_string(c, &r->qty)) return 0;
    if (!LIT(c, ",\"price\":") || !decimal_string(c, &r->price)) return 0;
    if (!LIT(c, ",\"product_id\":") || !str_plain(c, &r->sym, &r->symn)) return 0;
    if (!LIT(c, ",\"sequence\":") || !skip_value(c, 0)) return 0;
    return LIT(c, ",\"time\":") && time_string(c, &r->ts_us) && LIT(c, "}") && end_of_frame(c);
}

static int coinbase_frame(cur_t *c, cols_t *out, int32_t frame, int adv_maker) {
    rec_t r;
    memset(&r, 0, sizeof r);
    cur_t save = *c;
    if (coinbase_literal(c, &r)) return emit(out, frame, &r) ? 1 : -1;
    *c = save;
    memset(&r, 0, sizeof r);
    if (!expect(c, '{')) return 0;
    int first = 1, rc, seen = 0, handled, is_match = 0, is_adv = 0, have_events = 0;
    const char *k, *s;
    Py_ssize_t kn, n;
    while ((rc = next_key(c, &first, &k, &kn)) == 1) {
        if (KEY("type")) {
            if (is_match || !str_plain(c, &s, &n) || !(TEXT(s, n, "match") || TEXT(s, n, "last_match"))) return 0;
            is_match = 1;
        } else if (KEY("channel")) {
            if (is_adv || !str_plain(c, &s, &n) || !TEXT(s, n, "market_trades")) return 0;
            is_adv = 1;
        } else if (KEY("events")) {
            if (have_events) return 0;
            int t = coinbase_events(c, out, frame, adv_maker);
            if (t != 1) return t;
            have_events = 1;
        } else if (KEY("sequence_num")) {
            uint64_t v;
            if (!skip_literal(c, "null") && !uint_token(c, &v)) return 0;
        } else if (KEY("timestamp")) {
            if (peek(c) == '"') {
                if (!skip_string(c)) return 0;
            } else if (!skip_literal(c, "null")) {
                return 0;
            }
        } else {
            if (!coinbase_field(c, k, kn, &r, &seen, 0, adv_maker, &handled)) return 0;
            if (!handled && !skip_value(c, 0)) return 0;
        }
    }
    if (rc < 0 || !end_of_frame(c)) return 0;
    if (is_match && !is_adv && !have_events && seen == C_ALL) return emit(out, frame, &r) ? 1 : -1;
    if (is_adv && !is_match && have_events) return 1;
    return 0;
}

/* ---------------------------------------------------------------- module */

static PyObject *bytes_of(buf_t *b) {
    PyObject *o = PyBytes_FromStringAndSize(b->p ? b->p : "", b->len);
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    return o;
}

static int scan_one(int kind, const char *data, Py_ssize_t len, cols_t *out, int32_t i, int adv_maker) {
    /* A REST-response frame ({"rest":<url>,"status":..,"body":..}, k2/venues/rest.py) is never taken here, even
     * if it also carried WS trade keys: the Python parsers read every frame with this prefix as a REST frame. */
    if (len >= 8 && memcmp(data, "{\"rest\":", 8) == 0) return 0;
    cur_t c = {data, data + len};
    mark_t m;
    mark(out, &m);
    int ok = 0;
    if (kind == K_BINANCE) ok = binance_frame(&c, out, i);
    else if (kind == K_KRAKEN) ok = kraken_frame(&c, out, i);
    else if (kind == K_COINBASE) ok = coinbase_frame(&c, out, i, adv_maker);
    if (ok != 1) rollback(out, &m);
    return ok;
}

static PyObject *finish(cols_t *out, PyObject *fallback, int oom) {
    if (oom) {
        cols_free(out);
        Py_DECREF(fallback);
        return PyErr_NoMemory();
    }
    if (out->symoff.len == 0) {
        int32_t zero = 0;
        buf_put(&out->symoff, &zero, 4);
    }
    return Py_BuildValue("(nNNNNNNNNN)", out->n, fallback, bytes_of(&out->idx), bytes_of(&out->sym),
                         bytes_of(&out->symoff), bytes_of(&out->tid), bytes_of(&out->price), bytes_of(&out->qty),
                         bytes_of(&out->sell), bytes_of(&out->ts));
}

static PyObject *scan(PyObject *self, PyObject *args) {
    int kind, adv_maker = 1;
    PyObject *frames;
    if (!PyArg_ParseTuple(args, "iO|p", &kind, &frames, &adv_maker)) return NULL;
    PyObject *seq = PySequence_Fast(frames, "frames must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t nf = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *fallback = PyBytes_FromStringAndSize(NULL, nf);
    if (!fallback) {
        Py_DECREF(seq);
        return NULL;
    }
    char *fb = PyBytes_AS_STRING(fallback);
    cols_t out;
    memset(&out, 0, sizeof out);
    int oom = 0;
    for (Py_ssize_t i = 0; i < nf && !oom; i++) {
        PyObject *f = items[i];
        const char *data = NULL;
        Py_ssize_t len = 0;
        fb[i] = 1;
        if (PyUnicode_Check(f)) {
            data = PyUnicode_AsUTF8AndSize(f, &len);
            if (!data) { /* lone surrogates: not valid UTF-8, the general path dead-letters it */
                PyErr_Clear();
                continue;
            }
        } else if (PyBytes_Check(f)) {
            data = PyBytes_AS_STRING(f);
            len = PyBytes_GET_SIZE(f);
            int ascii = 1;
            for (Py_ssize_t j = 0; j < len; j++)
                if ((unsigned char)data[j] >= 0x80) {
                    ascii = 0;
                    break;
                }
            if (!ascii) continue; /* UTF-8 validity is the general path's job */
        } else {
            continue;
        }
        int ok = scan_one(kind, data, len, &out, (int32_t)i, adv_maker);
        if (ok == 1) fb[i] = 0;
        else if (ok < 0) oom = 1;
    }
    Py_DECREF(seq);
    return finish(&out, fallback, oom);
}

/* scan_arrow(kind, offsets, data, n, offset, adv): the frames of an Arrow utf8 array (int32 offsets) */
static PyObject *scan_arrow(PyObject *self, PyObject *args) {
    int kind, adv_maker = 1;
    Py_buffer offs, data;
    Py_ssize_t n, base;
    if (!PyArg_ParseTuple(args, "iy*y*nn|p", &kind, &offs, &data, &n, &base, &adv_maker)) return NULL;
    const int32_t *o = (const int32_t *)offs.buf;
    PyObject *fallback = NULL;
    if ((base + n + 1) * 4 > offs.len || n < 0 || base < 0) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer too short");
        goto fail;
    }
    fallback = PyBytes_FromStringAndSize(NULL, n);
    if (!fallback) goto fail;
    char *fb = PyBytes_AS_STRING(fallback);
    cols_t out;
    memset(&out, 0, sizeof out);
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !oom; i++) {
        int32_t a = o[base + i], b = o[base + i + 1];
        fb[i] = 1;
        if (a < 0 || b < a || b > data.len) continue;
        int ok = scan_one(kind, (const char *)data.buf + a, b - a, &out, (int32_t)i, adv_maker);
        if (ok == 1) fb[i] = 0;
        else if (ok < 0) oom = 1;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&offs);
    PyBuffer_Release(&data);
    return finish(&out, fallback, oom);
fail:
    PyBuffer_Release(&offs);
    PyBuffer_Release(&data);
    return NULL;
}

/* ---------------------------------------------------------------- capture lines */

/* RFC 3629 UTF-8 validation; 32 (x86-64) or eight ASCII bytes at a time */
static int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
#ifdef K2_X86
        if (i + 32 <= n) {
            __m128i v = _mm_or_si128(_mm_loadu_si128((const __m128i *)(s + i)),
                                     _mm_loadu_si128((const __m128i *)(s + i + 16)));
            if (!_mm_movemask_epi8(v)) {
                i += 32;
                continue;
            }
        }
#endif
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        int len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

static int hex4(const char *p, uint32_t *v) {
    uint32_t x = 0;
    for (int k = 0; k < 4; k++) {
        char h = p[k];
        x <<= 4;
        if (h >= '0' && h <= '9') x |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f') x |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') x |= (uint32_t)(h - 'A' + 10);
        else return 0;
    }
    *v = x;
    return 1;
}

/* bytes that end a plain run inside a JSON string: the quote, the backslash and control characters */
static unsigned char STR_STOP[256];

#ifdef K2_X86
/* COMPACT[m]: the positions of the zero bits of m in order, as a pshufb mask (the tail is never read) */
static uint8_t COMPACT[256][8];
static uint8_t KEPT[256];
static int use_ssse3;

/*
 * The bulk of a capture line's frame string, sixteen bytes a step: plain bytes and the escapes \" and \/ (a frame
 * inside a capture line has one every ten bytes or so). The backslashes are dropped with one shuffle per eight
 * bytes instead of a branch per escape, which the CPU mispredicts. Stops, leaving the rest to the scalar loop,
 * at anything else: the closing quote, any other escape, a control character, or fewer than 16 bytes left.
 * Writes up to 16 bytes at *w; the caller has room for as many bytes as are left in the input.
 */
__attribute__((target("ssse3"))) static const unsigned char *unescape16(const unsigned char *p,
                                                                     const unsigned char *end, char **o) {
    const __m128i bsl = _mm_set1_epi8('\\'), quo = _mm_set1_epi8('"'), sla = _mm_set1_epi8('/');
    const __m128i ctl = _mm_set1_epi8(0x1F);
    char *w = *o;
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        unsigned bs = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, bsl));
        unsigned q = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, quo));
        unsigned sl = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, sla));
        unsigned cc = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v));
        unsigned take = 16, drop = bs;
        if (bs & 0x8000u) { /* the escaped byte is in the next step: leave the backslash to it */
            bs &= 0x7FFFu;
            take = 15;
        }
        unsigned escaped = bs << 1; /* an escaped backslash stops here too: it is neither a quote nor a slash */
        if (cc || (escaped & ~(q | sl)) || (q & ~escaped & ((1u << take) - 1))) break;
        __m128i lo = _mm_shuffle_epi8(v, _mm_loadl_epi64((const __m128i *)COMPACT[drop & 0xFF]));
        _mm_storel_epi64((__m128i *)w, lo);
        w += KEPT[drop & 0xFF];
        __m128i hi = _mm_shuffle_epi8(_mm_srli_si128(v, 8), _mm_loadl_epi64((const __m128i *)COMPACT[drop >> 8]));
        _mm_storel_epi64((__m128i *)w, hi);
        w += KEPT[drop >> 8];
        p += take;
    }
    *o = w;
    return p;
}
#endif

/*
 * A JSON string (the line is already known to be valid UTF-8), unescaped to *o, which is advanced. The caller
 * guarantees room for as many bytes as the string's text has: unescaping never lengthens a string (an escape
 * of 2, 6 or 12 bytes becomes 1 to 4 bytes). 1 = read, 0 = not for this path.
 */
static int str_unescape(cur_t *c, char **o) {
    if (!expect(c, '"')) return 0;
    const unsigned char *p = (const unsigned char *)c->p, *end = (const unsigned char *)c->end;
    char *w = *o;
    for (;;) {
#ifdef K2_X86
        if (use_ssse3) p = unescape16(p, end, &w);
#endif
        while (p < end && !STR_STOP[*p]) *w++ = (char)*p++;
        if (p >= end) return 0;
        if (*p == '"') {
            p++;
            break;
        }
        if (*p != '\\' || p + 1 >= end) return 0; /* a control character, or a dangling backslash */
        switch (p[1]) {
            case '"': *w++ = '"'; break;
            case '\\': *w++ = '\\'; break;
            case '/': *w++ = '/'; break;
            case 'b': *w++ = '\b'; break;
            case 'f': *w++ = '\f'; break;
            case 'n': *w++ = '\n'; break;
            case 'r': *w++ = '\r'; break;
            case 't': *w++ = '\t'; break;
            case 'u': {
                uint32_t cp, lo;
                if (end - p < 6 || !hex4((const char *)p + 2, &cp)) return 0;
                p += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return 0; /* lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4((const char *)p + 2, &lo) || lo < 0xDC00 ||
                        lo > 0xDFFF)
                        return 0; /* lone high surrogate */
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
                if (cp < 0x80) *w++ = (char)cp;
                else if (cp < 0x800) {
                    *w++ = (char)(0xC0 | (cp >> 6));
                    *w++ = (char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    *w++ = (char)(0xE0 | (cp >> 12));
                    *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                    *w++ = (char)(0x80 | (cp & 0x3F));
                } else {
                    *w++ = (char)(0xF0 | (cp >> 18));
                    *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                    *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                    *w++ = (char)(0x80 | (cp & 0x3F));
                }
                continue;
            }
            default:
                return 0;
        }
        p += 2;
    }
    c->p = (const char *)p;
    *o = w;
    return 1;
}

/*
 * The frame text of one exchange's lines in a capture block: a read-only buffer object whose memory is kept for the
 * next block when Arrow lets go of it. A replay writes ~3 GB of frame text per 10M trades into such buffers and
 * frees each one a few seconds later, after its insert; fresh memory every time cost a page fault per 4 KiB (about
 * 40% of a replay's page faults). Blocks are recycled under the GIL (allocation and deallocation both hold it).
 */
typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t len, cap, touched; /* touched: the most ever written, so the resident part of cap */
    int kind;                     /* the exchange it holds frames of: reused for the same one, whose frames need
                                     about as much room each block (resident memory does not creep up to the
                                     largest exchange's) */
} block_t;

/* At most FREE_BLOCKS blocks and FREE_RESIDENT bytes of written (resident) memory wait for reuse: a replay of the
 * three exchanges releases ~36 blocks of ~3.5 MB written per insert; a one-exchange capture, 10 MB each. */
enum { FREE_BLOCKS = 64 };
static const Py_ssize_t FREE_RESIDENT = 128 << 20;
static struct {
    char *data;
    Py_ssize_t cap, touched;
    int kind;
} free_list[FREE_BLOCKS];
static Py_ssize_t free_resident;
static int n_free;
static PyTypeObject BlockType;

static block_t *block_new(Py_ssize_t need, int kind) {
    block_t *b = PyObject_New(block_t, &BlockType);
    if (!b) return NULL;
    b->data = NULL;
    b->len = b->touched = 0;
    b->kind = kind;
    for (int i = 0; i < n_free; i++) {
        if (free_list[i].cap >= need && free_list[i].kind == kind) {
            b->data = free_list[i].data;
            b->cap = free_list[i].cap;
            b->touched = free_list[i].touched;
            free_resident -= b->touched;
            free_list[i] = free_list[--n_free];
            break;
        }
    }
    if (!b->data) {
        b->data = malloc((size_t)(need > 0 ? need : 1));
        b->cap = need;
        if (!b->data) {
            Py_DECREF(b);
            PyErr_NoMemory();
            return NULL;
        }
    }
    return b;
}

static void block_dealloc(block_t *b) {
    if (b->data) {
        Py_ssize_t touched = b->len > b->touched ? b->len : b->touched;
        if (n_free < FREE_BLOCKS && free_resident + touched <= FREE_RESIDENT) {
            free_list[n_free].data = b->data;
            free_list[n_free].cap = b->cap;
            free_list[n_free].touched = touched;
            free_list[n_free++].kind = b->kind;
            free_resident += touched;
        } else {
            free(b->data);
        }
    }
    PyObject_Free(b);
}

static int block_getbuffer(block_t *b, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)b, b->data, b->len, 1, flags);
}

static PyBufferProcs block_as_buffer = {(getbufferproc)block_getbuffer, NULL};

static PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "k2.venues._scan.FrameBlock",
    .tp_basicsize = sizeof(block_t),
    .tp_dealloc = (destructor)block_dealloc,
    .tp_as_buffer = &block_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "frame text of one exchange's capture lines (read-only buffer; its memory is reused)",
};

/* the columns of one exchange's lines in a capture block */
typedef struct {
    block_t *frame; /* room for the whole block; its length is what was written */
    char *fw;        /* where the next frame's text goes */
    buf_t frameoff, conn, connoff, ts, line;
    Py_ssize_t n;
} exout_t;

/*
 * A capture line exactly as k2's capture writer lays it out, {"exchange":"...","ts_recv":...,"frame":"..."} and
 * then ,"conn":"..." or ,"conn":null or nothing: matched as literals instead of key by key. 1 = read up to and
 * including the closing brace, 0 = another layout (the general loop reads it; nothing here is committed), -1 = out
 * of memory.
 */
static int writer_line(cur_t *c, exout_t *ex, long long min_ts, long long max_ts, int *x, int64_t *t, char **fstart,
                       char **fend, buf_t *conn_scratch, Py_ssize_t *sconn) {
    uint64_t v;
    if (!LIT(c, "{\"exchange\":\"")) return 0;
    if (LIT(c, "binance\",")) *x = 0;
    else if (LIT(c, "kraken\",")) *x = 1;
    else if (LIT(c, "coinbase\",")) *x = 2;
    else return 0;
    if (!LIT(c, "\"ts_recv\":") || !uint_token(c, &v) || (long long)v < min_ts || (long long)v >= max_ts) return 0;
    *t = (int64_t)v;
    if (!LIT(c, ",\"frame\":")) return 0;
    *fstart = *fend = ex[*x].fw;
    if (!str_unescape(c, fend)) return 0;
    if (LIT(c, "}")) return 1;
    if (!LIT(c, ",\"conn\":")) return 0;
    if (LIT(c, "null}")) return 1;
    if (c->p == c->end || *c->p != '"') return 0;
    if (!buf_reserve(conn_scratch, c->end - c->p)) return -1;
    char *w = conn_scratch->p;
    if (!str_unescape(c, &w)) return 0;
    *sconn = w - conn_scratch->p;
    return LIT(c, "}");
}

/*
 * scan_capture(block, min_ts, max_ts) over complete capture lines (any object with the buffer protocol).
 *
 * Lines are split by exchange as they are read, so each exchange's frames come out as one Arrow utf8 column
 * (data + int32 offsets) with no gather afterwards. A frame is unescaped straight into its exchange's column
 * when "exchange" comes before "frame" in the line (the writer's order), else through a scratch buffer.
 * Returns (n, fallback, groups):
 *   n         lines in the block, blank ones included
 *   fallback  int64 triples (line index, start, end) of the lines left to the general path (any doubt)
 *   groups    per exchange (binance, kraken, coinbase): (count, line index int64, ts_recv int64, conn data,
 *             conn int32 offsets, frame data, frame int32 offsets)
 */
static PyObject *scan_capture(PyObject *self, PyObject *args) {
    Py_buffer in;
    long long min_ts, max_ts;
    if (!PyArg_ParseTuple(args, "y*LL", &in, &min_ts, &max_ts)) return NULL;
    if (in.len > 0x7fff0000) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "capture block too large");
        return NULL;
    }
    exout_t ex[3];
    memset(ex, 0, sizeof ex);
    buf_t fallback = {0}, scratch = {0}, conn_scratch = {0};
    int oom = 0;
    int32_t zero = 0;
    for (int e = 0; e < 3 && !oom; e++) {
        ex[e].frame = block_new(in.len, e);
        if (!ex[e].frame) oom = 1;
        else ex[e].fw = ex[e].frame->data;
        if (!oom && (!buf_put(&ex[e].frameoff, &zero, 4) || !buf_put(&ex[e].connoff, &zero, 4))) oom = 1;
    }
    const char *base = (const char *)in.buf, *p = base, *end = p + in.len;
    Py_ssize_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    while (p < end && !oom) {
        const char *nl = memchr(p, '\n', end - p);
        const char *q = p, *le = nl ? nl : end;
        p = nl ? nl + 1 : end;
        Py_ssize_t line = n++;
        const char *ls = q;
        while (ls < le && (*ls == ' ' || *ls == '\t' || *ls == '\r')) ls++;
        if (ls == le) continue; /* blank */
        int ok = 0, x = -1;
        int64_t t = 0;
        char *fstart = NULL, *fend = NULL; /* the frame, if written into its exchange's column */
        Py_ssize_t sframe = -1, sconn = -1; /* the frame / conn in the scratch buffers: their lengths */
        int fast = 0, valid = utf8_valid((const unsigned char *)q, le - q);
        if (valid) {
            cur_t c = {q, le};
            fast = writer_line(&c, ex, min_ts, max_ts, &x, &t, &fstart, &fend, &conn_scratch, &sconn);
            if (fast < 0) {
                oom = 1;
                break;
            }
            if (fast) {
                while (c.p < c.end && (*c.p == ' ' || *c.p == '\t' || *c.p == '\r')) c.p++;
                ok = c.p == c.end;
            }
        }
        if (valid && !fast) {
            x = -1;
            t = 0;
            fstart = fend = NULL;
            sconn = -1;
            cur_t c = {q, le};
            int first = 1, rc = -1, seen = 0, bad = 0;
            const char *k, *s;
            Py_ssize_t kn, sn;
            if (!expect(&c, '{')) bad = 1;
            while (!bad && (rc = next_key(&c, &first, &k, &kn)) == 1) {
                if (KEY("exchange")) {
                    if (seen & 1 || !str_plain(&c, &s, &sn)) { bad = 1; break; }
                    if (TEXT(s, sn, "binance")) x = 0;
                    else if (TEXT(s, sn, "kraken")) x = 1;
                    else if (TEXT(s, sn, "coinbase")) x = 2;
                    else { bad = 1; break; }
                    seen |= 1;
                } else if (KEY("ts_recv")) {
                    uint64_t v;
                    if (seen & 2 || !uint_token(&c, &v) || (long long)v < min_ts || (long long)v >= max_ts) { bad = 1; break; }
                    t = (int64_t)v;
                    seen |= 2;
                } else if (KEY("frame")) {
                    if (seen & 4) { bad = 1; break; }
                    if (x >= 0) {
                        fstart = fend = ex[x].fw;
                        if (!str_unescape(&c, &fend)) { bad = 1; break; }
                    } else {
                        if (!buf_reserve(&scratch, le - c.p)) { oom = 1; bad = 1; break; }
                        char *w = scratch.p;
                        if (!str_unescape(&c, &w)) { bad = 1; break; }
                        sframe = w - scratch.p;
                    }
                    seen |= 4;
                } else if (KEY("conn")) {
                    if (seen & 8) { bad = 1; break; }
                    if (peek(&c) == '"') {
                        if (!buf_reserve(&conn_scratch, le - c.p)) { oom = 1; bad = 1; break; }
                        char *w = conn_scratch.p;
                        if (!str_unescape(&c, &w)) { bad = 1; break; }
                        sconn = w - conn_scratch.p;
                    } else if (!skip_literal(&c, "null")) { bad = 1; break; }
                    seen |= 8;
                } else if (!skip_value(&c, 0)) {
                    bad = 1;
                }
            }
            if (!bad && rc == 0 && (seen & 7) == 7) {
                while (c.p < c.end && (*c.p == ' ' || *c.p == '\t' || *c.p == '\r')) c.p++;
                ok = c.p == c.end;
            }
        }
        if (oom) break;
        if (!ok) {
            int64_t tri[3] = {(int64_t)line, (int64_t)(q - base), (int64_t)(le - base)};
            if (!buf_put(&fallback, tri, 24)) oom = 1;
            continue; /* nothing was committed: the exchange's write position did not move */
        }
        exout_t *o = &ex[x];
        if (fstart == NULL) { /* the frame came before the exchange: from scratch into the column */
            memcpy(o->fw, scratch.p, (size_t)sframe);
            fend = o->fw + sframe;
        }
        o->fw = fend;
        int32_t fo = (int32_t)(o->fw - o->frame->data);
        if (sconn > 0 && !buf_put(&o->conn, conn_scratch.p, sconn)) oom = 1;
        int32_t co = (int32_t)o->conn.len;
        int64_t li = (int64_t)line;
        if (!buf_put(&o->frameoff, &fo, 4) || !buf_put(&o->connoff, &co, 4) || !buf_put(&o->ts, &t, 8) ||
            !buf_put(&o->line, &li, 8))
            oom = 1;
        o->n++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    free(scratch.p);
    free(conn_scratch.p);
    PyObject *groups = oom ? NULL : PyTuple_New(3);
    for (int e = 0; e < 3; e++) {
        exout_t *o = &ex[e];
        PyObject *g = NULL;
        if (groups && o->frame) {
            o->frame->len = o->fw - o->frame->data;
            g = Py_BuildValue("(nNNNNNN)", o->n, bytes_of(&o->line), bytes_of(&o->ts), bytes_of(&o->conn),
                              bytes_of(&o->connoff), (PyObject *)o->frame, bytes_of(&o->frameoff));
            o->frame = NULL; /* stolen by the tuple (or released by Py_BuildValue if it failed) */
        }
        if (g) PyTuple_SET_ITEM(groups, e, g);
        else if (groups) Py_CLEAR(groups);
        buf_t *all[] = {&o->frameoff, &o->conn, &o->connoff, &o->ts, &o->line};
        free_all(all, 5);
        Py_XDECREF((PyObject *)o->frame);
    }
    if (!groups) {
        free(fallback.p);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    return Py_BuildValue("(nNN)", n, bytes_of(&fallback), groups);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(kind, frames, adv_side_is_maker=True) -> (n, fallback, idx, sym, symoff, tid, price, qty, sell, ts)"},
    {"scan_arrow", scan_arrow, METH_VARARGS,
     "scan_arrow(kind, offsets, data, n, offset, adv_side_is_maker=True): scan over an Arrow utf8 array"},
    {"scan_capture", scan_capture, METH_VARARGS,
     "scan_capture(block, min_ts, max_ts) -> (n, fallback, groups); see the comment above its definition"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", "Fast path for common trade frame shapes.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__scan(void) {
    if (PyType_Ready(&BlockType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    STR_STOP['"'] = STR_STOP['\\'] = 1;
    for (int ch = 0; ch < 0x20; ch++) STR_STOP[ch] = 1;
#ifdef K2_X86
    __builtin_cpu_init();
    use_ssse3 = __builtin_cpu_supports("ssse3");
    for (int m = 0; m < 256; m++) {
        int k = 0;
        for (int b = 0; b < 8; b++)
            if (!(m >> b & 1)) COMPACT[m][k++] = (uint8_t)b;
        KEPT[m] = (uint8_t)k;
        while (k < 8) COMPACT[m][k++] = 0x80;
    }
#endif
    PyModule_AddIntConstant(m, "BINANCE", K_BINANCE);
    PyModule_AddIntConstant(m, "KRAKEN", K_KRAKEN);
    PyModule_AddIntConstant(m, "COINBASE", K_COINBASE);
    return m;
}
