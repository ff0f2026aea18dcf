/*
 * cpu_features.c — which SIMD path the CPU kernels take, decided once per process.
 *
 * CPUID says what the CPU implements, XGETBV says whether the OS saves the wider registers on a context
 * switch (a CPU with AVX-512 under an OS that does not enable the ZMM state must not run AVX-512 code). The
 * level found can be capped with SLUICE_SIMD=scalar|avx2|avx512 and forced by tests with sl_kcpu_set_simd.
 * Since every path computes bit-identical results (kcpu_impl.h), switching levels changes speed only.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kcpu_impl.h"

#if SL_KCPU_X86
#include <cpuid.h>
#endif

atomic_int sl__kcpu_level_v = -1;

static struct {
    sl_simd_level hw; /* best level the CPU and OS support */
    int avx512vnni;   /* AVX512-VNNI (vpdpbusd on zmm/ymm with EVEX) */
    int avxvnni;      /* AVX-VNNI (the VEX encoding, on AVX2-only parts such as Alder Lake) */
} sl_kcpu_hw;

static atomic_int sl_kcpu_vnni_allowed = 1;
static pthread_once_t sl_kcpu_once = PTHREAD_ONCE_INIT;

#if SL_KCPU_X86
static uint64_t sl_kcpu_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void sl_kcpu_detect(void) {
    unsigned a, b, c, d;
    sl_kcpu_hw.hw = SL_SIMD_SCALAR;
    if (__get_cpuid_max(0, NULL) < 7 || !__get_cpuid(1, &a, &b, &c, &d)) return;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    uint64_t xcr0 = sl_kcpu_xgetbv0();
    int os_ymm = (xcr0 & 0x6) == 0x6;    /* XMM and YMM state */
    int os_zmm = (xcr0 & 0xe6) == 0xe6; /* plus opmask, ZMM0-15 upper halves, ZMM16-31 */
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    int avx512vnni = (c >> 11) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    int avxvnni = (a >> 4) & 1;
    if (!(os_ymm && avx2 && fma && f16c)) return;
    sl_kcpu_hw.hw = SL_SIMD_AVX2;
    sl_kcpu_hw.avxvnni = avxvnni;
    if (os_zmm && avx512f && avx512bw && avx512vl) {
        sl_kcpu_hw.hw = SL_SIMD_AVX512;
        sl_kcpu_hw.avx512vnni = avx512vnni;
    }
}
#else
static void sl_kcpu_detect(void) { sl_kcpu_hw.hw = SL_SIMD_SCALAR; }
#endif

static void sl_kcpu_init_once(void) {
    sl_kcpu_detect();
    sl_simd_level level = sl_kcpu_hw.hw;
    const char *cap = getenv("SLUICE_SIMD");
    if (cap) { /* an unknown value leaves the level as detected */
        if (!strcmp(cap, "scalar")) level = SL_SIMD_SCALAR;
        else if (!strcmp(cap, "avx2") && level > SL_SIMD_AVX2) level = SL_SIMD_AVX2;
    }
    atomic_store(&sl__kcpu_level_v, (int)level);
}

void sl_kcpu_init(void) { pthread_once(&sl_kcpu_once, sl_kcpu_init_once); }

sl_simd_level sl_kcpu_simd(void) { return sl__kcpu_level(); }

const char *sl_kcpu_simd_name(void) {
    switch (sl__kcpu_level()) {
    case SL_SIMD_AVX512: return sl__kcpu_use_vnni512() ? "avx512-vnni" : "avx512";
    case SL_SIMD_AVX2: return sl__kcpu_use_avxvnni() ? "avx2-vnni" : "avx2";
    default: return "scalar";
    }
}

sl_simd_level sl_kcpu_set_simd(sl_simd_level level) {
    sl_kcpu_init();
    if ((int)level < (int)SL_SIMD_SCALAR) level = SL_SIMD_SCALAR;
    if (level > sl_kcpu_hw.hw) level = sl_kcpu_hw.hw;
    atomic_store(&sl__kcpu_level_v, (int)level);
    return level;
}

int sl__kcpu_use_vnni512(void) {
    return sl__kcpu_level() == SL_SIMD_AVX512 && sl_kcpu_hw.avx512vnni && atomic_load(&sl_kcpu_vnni_allowed);
}

int sl__kcpu_use_avxvnni(void) {
    return sl__kcpu_level() >= SL_SIMD_AVX2 && sl_kcpu_hw.avxvnni && atomic_load(&sl_kcpu_vnni_allowed);
}

void sl__kcpu_allow_vnni(int allow) { atomic_store(&sl_kcpu_vnni_allowed, allow ? 1 : 0); }
