/*
 * wasi_none.c: WASI, virtualised at build time. wasi-libc reaches the system through
 * a few WASI functions; a policy has no system to reach, so they are defined here and
 * the component imports none of them. Writes to stdout and stderr go to Gantry's log;
 * there are no files, no environment and no arguments; the clock stands still at 0;
 * "random" bytes come from a fixed seed, the same on every load. A WASI function not
 * defined here stays an import, and Gantry refuses the component at load, naming it.
 */
#include <stdint.h>
#include <string.h>

#include "gantry.h"

#define WASI(name) __imported_wasi_snapshot_preview1_##name
enum { ESUCCESS = 0, EBADF = 8, ESPIPE = 70 };

struct ciovec {
    const uint8_t *buf;
    uint32_t len;
};

int32_t WASI(fd_write)(int32_t fd, int32_t iovs, int32_t count, int32_t written) {
    if (fd != 1 && fd != 2) return EBADF;
    const struct ciovec *v = (const struct ciovec *)iovs;
    uint32_t total = 0;
    for (int32_t i = 0; i < count; i++) {
        uint32_t n = v[i].len;
        /* One log line per line written; the newline is the line's end. */
        while (n > 0 && v[i].buf[n - 1] == '\n') n--;
        if (n > 0) gantry_log(fd == 2 ? GANTRY_WARN : GANTRY_INFO, "%.*s", (int)n, v[i].buf);
        total += v[i].len;
    }
    *(uint32_t *)written = total;
    return ESUCCESS;
}

int32_t WASI(fd_close)(int32_t fd) {
    (void)fd;
    return EBADF;
}

int32_t WASI(fd_seek)(int32_t fd, int64_t offset, int32_t whence, int32_t to) {
    (void)fd, (void)offset, (void)whence, (void)to;
    return ESPIPE;
}

int32_t WASI(fd_fdstat_get)(int32_t fd, int32_t stat) {
    (void)fd, (void)stat;
    return EBADF;
}

int32_t WASI(clock_time_get)(int32_t clock, int64_t precision, int32_t time) {
    (void)clock, (void)precision;
    *(uint64_t *)time = 0;
    return ESUCCESS;
}

int32_t WASI(random_get)(int32_t buf, int32_t len) {
    /* splitmix64 from a fixed seed: deterministic, as a policy's answers must be. */
    static uint64_t state = 0x9e3779b97f4a7c15u;
    uint8_t *out = (uint8_t *)buf;
    for (int32_t i = 0; i < len; i += 8) {
        uint64_t z = (state += 0x9e3779b97f4a7c15u);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
        z ^= z >> 31;
        memcpy(out + i, &z, len - i < 8 ? (size_t)(len - i) : 8);
    }
    return ESUCCESS;
}

int32_t WASI(environ_sizes_get)(int32_t count, int32_t size) {
    *(uint32_t *)count = 0;
    *(uint32_t *)size = 0;
    return ESUCCESS;
}

int32_t WASI(environ_get)(int32_t environ, int32_t buf) {
    (void)environ, (void)buf;
    return ESUCCESS;
}

int32_t WASI(args_sizes_get)(int32_t count, int32_t size) {
    *(uint32_t *)count = 0;
    *(uint32_t *)size = 0;
    return ESUCCESS;
}

int32_t WASI(args_get)(int32_t argv, int32_t buf) {
    (void)argv, (void)buf;
    return ESUCCESS;
}

_Noreturn void WASI(proc_exit)(int32_t code) {
    gantry_log(GANTRY_ERROR, "exit(%d) called: a policy cannot exit", (int)code);
    __builtin_trap();
}
