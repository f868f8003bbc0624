/* netdam's per-datagram fast path in C (the Python side is netdam/wire/fast.py).
 *
 * Owns the work a bulk transfer does once per datagram, where Python's per-call cost
 * would dominate: CRC32C (SPEC §3) at memory speed, the validation and field parsing
 * of a batch of datagrams (the checks of codec.decode, in the same order), copying a
 * batch of payloads into device memory, stamping headers and trailers of a batch of
 * fragments for sending, and sending such a batch with one sendmmsg. No protocol decisions are made here: the sans-I/O engines decide, this
 * code only does what they would do byte by byte.
 *
 * Header offsets come from the ND_OFF_* / ND_HEADER_LEN / ND_MAGIC / ND_VERSION defines
 * that fastpath_build.py generates from proto/netdam.toml and prepends to this file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#include <immintrin.h>
#include <nmmintrin.h>
#define ND_X86 1
#endif
/* the folding CRC kernel needs AVX-512 intrinsics a compiler of these versions has */
#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 8 : __GNUC__ >= 10)
#define ND_FOLD 1
#endif

/* ---- CRC32C (Castagnoli, reflected 0x82F63B78), as the crc32c package computes it ---- */
#define POLY 0x82f63b78u
#define LONG_BLOCK 16384
#define MID_BLOCK 2048
#define SHORT_BLOCK 256

static uint32_t crc_table[8][256];       /* slicing-by-8, the portable path */
static uint32_t crc_long[4][256];        /* shift a CRC over LONG_BLOCK zero bytes */
static uint32_t crc_mid[4][256];         /* ... over MID_BLOCK zero bytes */
static uint32_t crc_short[4][256];       /* ... over SHORT_BLOCK zero bytes */
static int crc_ready = 0;
static int crc_hw = 0;                   /* the kernel in use: CRC_TABLE, CRC_SSE42, ... */
enum { CRC_TABLE, CRC_SSE42, CRC_FOLD };
static const char *const crc_names[] = {"table", "sse4.2", "vpclmulqdq"};
const char *nd_crc_select(int widest);

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1)
            sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++)
        square[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends len zero bytes (len a power of two) to a CRC register. */
static void zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32];
    uint32_t row = 1;
    odd[0] = POLY;                    /* one zero bit */
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_square(even, odd);            /* two zero bits */
    gf2_square(odd, even);            /* four */
    do {                              /* eight, sixteen, ... as len halves */
        gf2_square(even, odd);
        len >>= 1;
        if (len == 0)
            return;
        gf2_square(odd, even);
        len >>= 1;
    } while (len);
    memcpy(even, odd, sizeof(odd));
}

static void zeros_table(uint32_t zeros[4][256], size_t len) {
    uint32_t op[32];
    zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = gf2_times(op, n);
        zeros[1][n] = gf2_times(op, n << 8);
        zeros[2][n] = gf2_times(op, n << 16);
        zeros[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t shift(uint32_t zeros[4][256], uint32_t crc) {
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^
           zeros[2][(crc >> 16) & 0xff] ^ zeros[3][crc >> 24];
}

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ POLY : crc >> 1;
        crc_table[0][n] = crc;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            crc = crc_table[0][crc & 0xff] ^ (crc >> 8);
            crc_table[k][n] = crc;
        }
    }
    zeros_table(crc_long, LONG_BLOCK);
    zeros_table(crc_mid, MID_BLOCK);
    zeros_table(crc_short, SHORT_BLOCK);
    crc_ready = 1;
    nd_crc_select(2);
}

static uint32_t crc_soft(uint32_t crc, const uint8_t *buf, size_t len) {
    uint64_t c = crc ^ 0xffffffffu;
    while (len && ((uintptr_t)buf & 7)) {
        c = crc_table[0][(c ^ *buf++) & 0xff] ^ (c >> 8);
        len--;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, buf, 8);
        c ^= w;
        c = crc_table[7][c & 0xff] ^ crc_table[6][(c >> 8) & 0xff] ^
            crc_table[5][(c >> 16) & 0xff] ^ crc_table[4][(c >> 24) & 0xff] ^
            crc_table[3][(c >> 32) & 0xff] ^ crc_table[2][(c >> 40) & 0xff] ^
            crc_table[1][(c >> 48) & 0xff] ^ crc_table[0][c >> 56];
        buf += 8;
        len -= 8;
    }
#endif
    while (len--)
        c = crc_table[0][(c ^ *buf++) & 0xff] ^ (c >> 8);
    return (uint32_t)c ^ 0xffffffffu;
}

#ifdef ND_X86
static inline uint64_t load64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Three independent streams over blocks of ``block`` bytes hide the crc32 instruction's
 * latency; their CRCs are joined by shifting over the zero bytes that follow each
 * (Adler's method). Consumes whole triples of blocks from *buf / *len. */
__attribute__((target("sse4.2")))
static uint64_t crc_triples(uint64_t c0, const uint8_t **buf, size_t *len, size_t block,
                            uint32_t zeros[4][256]) {
    const uint8_t *p = *buf;
    size_t n = *len;
    while (n >= 3 * block) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + block;
        do {
            c0 = _mm_crc32_u64(c0, load64(p));
            c1 = _mm_crc32_u64(c1, load64(p + block));
            c2 = _mm_crc32_u64(c2, load64(p + 2 * block));
            p += 8;
        } while (p < end);
        c0 = shift(zeros, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(zeros, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * block;
        n -= 3 * block;
    }
    *buf = p;
    *len = n;
    return c0;
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw3(uint32_t crc, const uint8_t *buf, size_t len) {
    uint64_t c0 = crc ^ 0xffffffffu;
    while (len && ((uintptr_t)buf & 7)) {
        c0 = _mm_crc32_u8((uint32_t)c0, *buf++);
        len--;
    }
    c0 = crc_triples(c0, &buf, &len, LONG_BLOCK, crc_long);
    c0 = crc_triples(c0, &buf, &len, MID_BLOCK, crc_mid);
    c0 = crc_triples(c0, &buf, &len, SHORT_BLOCK, crc_short);
    while (len >= 8) {
        c0 = _mm_crc32_u64(c0, load64(buf));
        buf += 8;
        len -= 8;
    }
    while (len--)
        c0 = _mm_crc32_u8((uint32_t)c0, *buf++);
    return (uint32_t)c0 ^ 0xffffffffu;
}

#ifdef ND_FOLD
/* Carry-less multiplication folds the bulk of a buffer into FOLD_BYTES that have the
 * same CRC (Intel, "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", 2009),
 * four 512-bit accumulators at a time; the crc32 instruction then finishes from those
 * bytes and the tail. The reflected bits of a 16-byte lane hold the polynomial
 * L(x)*x^64 + H(x) (L the low 8 bytes); carry-less multiplication of two reflected
 * 64-bit values yields x*A*B, so moving a lane D bits on is
 *     L (x) (x^(D+63) mod P)  ^  H (x) (x^(D-1) mod P),
 * which is congruent to the lane times x^D, modulo P, and as wide as a lane. */
#define FOLD_BYTES 256
#define FOLD_MIN 1024                     /* shorter buffers go to crc_hw3 */
static uint64_t fold_k[2];                /* the two constants for D = FOLD_BYTES*8 bits */

/* x^n mod P as a reflected 64-bit value (x^d at bit 63-d). */
static uint64_t xpow_reflected(unsigned n) {
    uint64_t r = 1;                       /* normal order: x^d at bit d */
    while (n--) {
        r <<= 1;
        if (r >> 32)
            r ^= 0x11edc6f41ull;          /* P, the Castagnoli polynomial */
    }
    uint64_t out = 0;
    for (int d = 0; d < 32; d++)
        if (r >> d & 1)
            out |= 1ull << (63 - d);
    return out;
}

__attribute__((target("avx512f,vpclmulqdq,sse4.2")))
static uint32_t crc_fold(uint32_t crc, const uint8_t *buf, size_t len) {
    const __m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_k[1],
                                                            (long long)fold_k[0]));
    __m512i a0 = _mm512_loadu_si512(buf), a1 = _mm512_loadu_si512(buf + 64);
    __m512i a2 = _mm512_loadu_si512(buf + 128), a3 = _mm512_loadu_si512(buf + 192);
    /* the register's start is the same as these bits added to the first four bytes */
    a0 = _mm512_xor_si512(a0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)~crc)));
    buf += FOLD_BYTES;
    len -= FOLD_BYTES;
#define FOLD(a, at) _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, k, 0x00), \
                                              _mm512_clmulepi64_epi128(a, k, 0x11), \
                                              _mm512_loadu_si512(buf + (at)), 0x96)
    while (len >= FOLD_BYTES) {
        a0 = FOLD(a0, 0);
        a1 = FOLD(a1, 64);
        a2 = FOLD(a2, 128);
        a3 = FOLD(a3, 192);
        buf += FOLD_BYTES;
        len -= FOLD_BYTES;
    }
#undef FOLD
    uint8_t folded[FOLD_BYTES] __attribute__((aligned(64)));
    _mm512_store_si512(folded, a0);
    _mm512_store_si512(folded + 64, a1);
    _mm512_store_si512(folded + 128, a2);
    _mm512_store_si512(folded + 192, a3);
    return crc_hw3(crc_hw3(0xffffffffu, folded, FOLD_BYTES), buf, len);
}
#endif /* ND_FOLD */
#endif /* ND_X86 */

uint32_t nd_crc32c(uint32_t crc, const uint8_t *buf, size_t len) {
    if (!crc_ready)
        crc_init();
#ifdef ND_FOLD
    if (crc_hw == CRC_FOLD && len >= FOLD_MIN)
        return crc_fold(crc, buf, len);
#endif
#ifdef ND_X86
    if (crc_hw != CRC_TABLE)
        return crc_hw3(crc, buf, len);
#endif
    return crc_soft(crc, buf, len);
}

/* Choose the CRC kernel: the widest this CPU runs up to ``widest`` (0 the portable
 * tables, 1 the crc32 instruction, 2 carry-less folding as well); tests use it to check
 * each kernel on any CPU that has it. Returns the kernel's name. */
const char *nd_crc_select(int widest) {
    if (!crc_ready)
        crc_init();
    crc_hw = CRC_TABLE;
#ifdef ND_X86
    __builtin_cpu_init();
    if (widest >= 1 && __builtin_cpu_supports("sse4.2"))
        crc_hw = CRC_SSE42;
#ifdef ND_FOLD
    if (widest >= 2 && crc_hw == CRC_SSE42 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("vpclmulqdq")) {
        fold_k[0] = xpow_reflected(FOLD_BYTES * 8 + 63);
        fold_k[1] = xpow_reflected(FOLD_BYTES * 8 - 1);
        crc_hw = CRC_FOLD;
    }
#endif
#endif
    return crc_names[crc_hw];
}

/* The name of the CRC kernel in use. */
const char *nd_crc_kernel(void) {
    if (!crc_ready)
        crc_init();
    return crc_names[crc_hw];
}

/* ---- header fields (network byte order) ---- */
static inline uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }
static inline void put16(uint8_t *p, uint32_t v) { p[0] = v >> 8; p[1] = v; }
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

typedef struct {
    uint32_t ok;          /* 1: CRC, magic, version and lengths hold (codec.decode accepts) */
    uint32_t opcode, flags, status, dtype, redop, hop, nhops, src, dst, pkey, group;
    uint32_t rkey, seq, ack, req_id, payload_len, length, frag_off;
    uint64_t addr, addr2, imm;
    uint32_t payload_at;  /* offset of the payload in the datagram */
} nd_hdr;

typedef struct {
    uint32_t count, uniform;  /* datagrams in the run; 1: all pass the table-free checks */
    uint64_t lo, hi, payload; /* the bytes it writes: [lo, hi), payload bytes in all */
} nd_run;

static size_t route_bytes(uint32_t nhops) {
    size_t raw = 2 * (size_t)nhops;
    return raw + (ND_ROUTE_ALIGN - raw % ND_ROUTE_ALIGN) % ND_ROUTE_ALIGN;
}

/* Parse n datagrams. A datagram codec.decode would refuse gets ok = 0 (the caller
 * sends it down the general path, which names the problem). */
void nd_scan(size_t n, const uint8_t *const *grams, const uint32_t *lens, nd_hdr *out) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *g = grams[i];
        size_t total = lens[i];
        nd_hdr *h = &out[i];
        h->ok = 0;
        if (total < ND_HEADER_LEN + ND_TRAILER_LEN || be16(g + ND_OFF_magic) != ND_MAGIC)
            continue;
        size_t body = total - ND_TRAILER_LEN;
        if (nd_crc32c(0, g, body) != be32(g + body))
            continue;
        if (g[ND_OFF_version] != ND_VERSION)
            continue;
        h->nhops = g[ND_OFF_nhops];
        h->hop = g[ND_OFF_hop];
        h->payload_len = be32(g + ND_OFF_payload_len);
        size_t rlen = route_bytes(h->nhops);
        if ((uint64_t)ND_HEADER_LEN + rlen + h->payload_len + ND_TRAILER_LEN != total)
            continue;
        if (h->nhops && h->hop > h->nhops)
            continue;
        h->opcode = g[ND_OFF_opcode];
        h->flags = be16(g + ND_OFF_flags);
        h->status = g[ND_OFF_status];
        h->dtype = g[ND_OFF_dtype];
        h->redop = g[ND_OFF_redop];
        h->src = be16(g + ND_OFF_src);
        h->dst = be16(g + ND_OFF_dst);
        h->pkey = be16(g + ND_OFF_pkey);
        h->group = be16(g + ND_OFF_group);
        h->rkey = be32(g + ND_OFF_rkey);
        h->seq = be32(g + ND_OFF_seq);
        h->ack = be32(g + ND_OFF_ack);
        h->req_id = be32(g + ND_OFF_req_id);
        h->addr = be64(g + ND_OFF_addr);
        h->addr2 = be64(g + ND_OFF_addr2);
        h->imm = be64(g + ND_OFF_imm);
        h->length = be32(g + ND_OFF_length);
        h->frag_off = be32(g + ND_OFF_frag_off);
        h->payload_at = (uint32_t)(ND_HEADER_LEN + rlen);
        h->ok = 1;
    }
}

/* A run's hull [lo, hi) widened by [start, end). */
static inline void widen(uint64_t *lo, uint64_t *hi, uint64_t start, uint64_t end) {
    if (start < *lo)
        *lo = start;
    if (end > *hi)
        *hi = end;
}

static void run_found(nd_run *out, size_t count, uint32_t uniform, uint64_t lo,
                      uint64_t hi, uint64_t payload) {
    out->count = (uint32_t)count;
    out->uniform = uniform;
    out->lo = lo;
    out->hi = hi;
    out->payload = payload;
}

/* The run of plain WRITE fragments that starts at h[0], as a device's batch lane groups
 * them: consecutive datagrams that scanned ok, have opcode ``op`` and flags ``plain_a``
 * or ``plain_b``, one src and consecutive sequence numbers. ``uniform`` says whether
 * every one also passes the checks that need no device tables: one rkey and pkey,
 * aimed at ``me`` or ``any``, no route, a dtype whose bit is set in ``dtypes``, and the
 * fragment within its message. ``lo``/``hi`` bound the bytes the run writes. */
void nd_write_run(size_t n, const nd_hdr *h, uint32_t op, uint32_t plain_a,
                  uint32_t plain_b, uint32_t me, uint32_t any, uint64_t dtypes,
                  nd_run *out) {
    const nd_hdr *f = &h[0];
    uint64_t lo = f->addr + f->frag_off, hi = lo, payload = 0;
    uint32_t uniform = 1;
    size_t i = 0;
    for (; i < n; i++) {
        const nd_hdr *g = &h[i];
        if (i && (!g->ok || g->opcode != op || (g->flags != plain_a && g->flags != plain_b)
                  || g->src != f->src || g->seq != (uint32_t)(f->seq + i)))
            break;
        if (g->rkey != f->rkey || g->pkey != f->pkey || (g->dst != me && g->dst != any)
                || g->nhops || g->dtype >= 64 || !((dtypes >> g->dtype) & 1)
                || (uint64_t)g->frag_off + g->payload_len > g->length)
            uniform = 0;
        uint64_t start = g->addr + g->frag_off, end = start + g->payload_len;
        if (start < g->addr || end < start)
            uniform = 0;              /* past 2^64: Python's integers would not wrap */
        widen(&lo, &hi, start, end);
        payload += g->payload_len;
    }
    run_found(out, i, uniform, lo, hi, payload);
}

/* Messages at least this long are written to device memory with streaming stores: a
 * bulk transfer does not fit the caches anyway, and a store that skips them neither
 * reads each destination line first nor evicts what the device is working on (the
 * same reasoning as glibc's non-temporal threshold, but per message: one 64 KiB
 * fragment of a 16 MiB WRITE is small, its message is not). */
#define STREAM_MIN (4u << 20)

#ifdef ND_X86
/* memcpy with SSE2 non-temporal stores (baseline on x86-64), fenced so the bytes are
 * visible before anything the caller does next (a signal, an ACK). */
static void copy_streaming(uint8_t *d, const uint8_t *s, size_t n) {
    while (n && ((uintptr_t)d & 15)) {
        *d++ = *s++;
        n--;
    }
    for (; n >= 64; d += 64, s += 64, n -= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, n);
    _mm_sfence();
}
#endif

/* Copy the payloads of datagrams 0..n to mem + addr + frag_off; the caller has checked
 * every range against the region. */
void nd_copy_payloads(uint8_t *mem, size_t n, const uint8_t *const *grams,
                      const nd_hdr *hdrs) {
    for (size_t k = 0; k < n; k++) {
        const nd_hdr *h = &hdrs[k];
        uint8_t *to = mem + h->addr + h->frag_off;
        const uint8_t *from = grams[k] + h->payload_at;
#ifdef ND_X86
        if (h->length >= STREAM_MIN) {
            copy_streaming(to, from, h->payload_len);
            continue;
        }
#endif
        memcpy(to, from, h->payload_len);
    }
}

/* The run of fragments of one message that starts at h[0], as a host takes a burst of
 * answers: consecutive datagrams that scanned ok, have opcode ``op`` and the src,
 * req_id and length of h[0], each within the message. ``uniform`` says whether each
 * starts where the one before ended (then [lo, hi) is exactly what the run covers). */
void nd_msg_run(size_t n, const nd_hdr *h, uint32_t op, nd_run *out) {
    const nd_hdr *f = &h[0];
    uint64_t lo = f->frag_off, hi = lo, payload = 0;
    uint32_t uniform = 1;
    size_t i = 0;
    for (; i < n; i++) {
        const nd_hdr *g = &h[i];
        if (!g->ok || g->opcode != op || g->src != f->src || g->req_id != f->req_id
                || g->length != f->length
                || (uint64_t)g->frag_off + g->payload_len > g->length)
            break;
        if (i && g->frag_off != hi)
            uniform = 0;
        widen(&lo, &hi, g->frag_off, (uint64_t)g->frag_off + g->payload_len);
        payload += g->payload_len;
    }
    run_found(out, i, uniform, lo, hi, payload);
}

/* Copy the payloads of datagrams 0..n to dst + frag_off (a message's buffer); the
 * caller has checked every fragment against the message's length. */
void nd_copy_fragments(uint8_t *dst, size_t n, const uint8_t *const *grams,
                       const nd_hdr *hdrs) {
    for (size_t k = 0; k < n; k++)
        memcpy(dst + hdrs[k].frag_off, grams[k] + hdrs[k].payload_at, hdrs[k].payload_len);
}

/* ---- sending a batch of fragments ---- */
/* heads: n * head_len bytes, each a copy of the same header (and route) that this stamps
 * with seq[i], frag_off[i], payload_len[i] and flags[i]; the CRC of head + payload is
 * written to trailers[4 * i]. */
void nd_stamp(size_t n, uint8_t *heads, size_t head_len, const uint32_t *seq,
              const uint32_t *frag_off, const uint32_t *plen, const uint32_t *flags,
              const uint8_t *const *payloads, uint8_t *trailers) {
    for (size_t i = 0; i < n; i++) {
        uint8_t *h = heads + i * head_len;
        put32(h + ND_OFF_seq, seq[i]);
        put32(h + ND_OFF_frag_off, frag_off[i]);
        put32(h + ND_OFF_payload_len, plen[i]);
        put16(h + ND_OFF_flags, flags[i]);
        uint32_t crc = nd_crc32c(0, h, head_len);
        crc = nd_crc32c(crc, payloads[i], plen[i]);
        put32(trailers + 4 * i, crc);
    }
}

/* Send n datagrams (head, payload, trailer) to one IPv4 address with sendmmsg. Returns
 * how many the kernel took, or -errno if it took none. */
int nd_send_batch(int fd, size_t n, const uint8_t *heads, size_t head_len,
                  const uint8_t *const *payloads, const uint32_t *plen,
                  const uint8_t *trailers, uint32_t ip_be, uint16_t port_be) {
    enum { MAXB = 64 };
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = ip_be;
    sa.sin_port = port_be;
    size_t done = 0;
    while (done < n) {
        struct mmsghdr msgs[MAXB];
        struct iovec iov[MAXB][3];
        size_t b = n - done < MAXB ? n - done : MAXB;
        memset(msgs, 0, sizeof(struct mmsghdr) * b);
        for (size_t i = 0; i < b; i++) {
            size_t j = done + i;
            iov[i][0].iov_base = (void *)(heads + j * head_len);
            iov[i][0].iov_len = head_len;
            iov[i][1].iov_base = (void *)payloads[j];
            iov[i][1].iov_len = plen[j];
            iov[i][2].iov_base = (void *)(trailers + 4 * j);
            iov[i][2].iov_len = 4;
            msgs[i].msg_hdr.msg_name = &sa;
            msgs[i].msg_hdr.msg_namelen = sizeof(sa);
            msgs[i].msg_hdr.msg_iov = iov[i];
            msgs[i].msg_hdr.msg_iovlen = 3;
        }
        int r = sendmmsg(fd, msgs, (unsigned)b, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return done ? (int)done : -errno;
        }
        done += (size_t)r;
        if ((size_t)r < b)
            break;
    }
    return (int)done;
}
