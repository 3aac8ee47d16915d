/*
 * An SD card's fsync latency for the bench (`npm run bench -- --fsync-delay <ms>`): preloaded into
 * the gateway's process only, it makes every fsync and fdatasync wait that many milliseconds
 * (IOTGW_FSYNC_DELAY_MS) before doing the real call. The machine's fast disk hides what a card's
 * 10 to 100 ms per sync (more while it collects garbage) does to a process that syncs on its main
 * thread; this shows it (app/docs/write-path.md, "A slow card").
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void card_latency(void) {
    const char *e = getenv("IOTGW_FSYNC_DELAY_MS");
    long ms = e ? atol(e) : 0;
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    if (ms > 0) nanosleep(&t, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    card_latency();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    card_latency();
    return real(fd);
}
