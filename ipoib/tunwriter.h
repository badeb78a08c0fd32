/* The TUN writer: one thread per process that writes what the accelerated provider's RX path hands
 * up to the kernel (ipoib/_fasttun.pyx write_run), as a NIC's DMA engine and interrupt run beside
 * the CPU that fills its rings. A write into a TUN device runs the receiving kernel's whole stack
 * (IP, TCP, the socket's wakeup) in the writer's context: a third of the device host's time under
 * TCP load. On its own thread that work goes to the machine's other core, and the host's loop goes
 * on with the next packets.
 *
 * A write is copied into one of TW_SLOTS buffers and queued; the thread writes them in order (so
 * every TUN queue sees its packets in the order they came) and sleeps on a condition variable when
 * there is nothing to write. The producer is the host's loop, one thread (it holds the GIL). A lone
 * frame is written at once by the caller when nothing is queued (a ping's reply waits for no
 * thread's wakeup). tw_quiesce waits for every queued write (before a TUN fd goes away). */
#ifndef IBFAB_TUNWRITER_H
#define IBFAB_TUNWRITER_H

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TW_SLOTS 16
#define TW_BUF 65664  /* the TUN header and the largest super-packet, rounded up */

#ifndef IBFAB_TW_STATS  /* ipoib/_fasttun.pxd declares it too, for the modules that cimport it */
#define IBFAB_TW_STATS
typedef struct { unsigned long long written, bytes, errors; } tw_stats;
#endif

typedef struct {
    int fd;
    size_t len, counted;  /* octets written; octets the stats count (the packet, not its header) */
    tw_stats *st;
    unsigned char *buf;
} tw_item;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, room, idle;
    tw_item items[TW_SLOTS];
    unsigned long long head, tail;  /* queued: [tail, head) */
    int started, sleeping, failed, buffers;
} tw = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
        PTHREAD_COND_INITIALIZER};

static void tw_count(tw_item *it, ssize_t r)
{
    if (r < 0) {
        __atomic_fetch_add(&it->st->errors, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(&it->st->written, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&it->st->bytes, it->counted, __ATOMIC_RELAXED);
    }
}

static ssize_t tw_write(int fd, const void *buf, size_t len)
{
    ssize_t r;
    do
        r = write(fd, buf, len);
    while (r < 0 && errno == EINTR);
    return r;
}

static void *tw_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&tw.mu);
    for (;;) {
        while (tw.head == tw.tail) {
            pthread_cond_broadcast(&tw.idle);
            tw.sleeping = 1;
            pthread_cond_wait(&tw.work, &tw.mu);
            tw.sleeping = 0;
        }
        tw_item *it = &tw.items[tw.tail % TW_SLOTS];
        pthread_mutex_unlock(&tw.mu);
        tw_count(it, tw_write(it->fd, it->buf, it->len));
        pthread_mutex_lock(&tw.mu);
        __atomic_store_n(&tw.tail, tw.tail + 1, __ATOMIC_RELEASE);
        if (tw.head - tw.tail == TW_SLOTS - 1)
            pthread_cond_signal(&tw.room);
    }
    return NULL;
}

/* In a forked child the thread stayed with the parent, and so did the state of the lock: the
 * child starts afresh (its own thread, at its first write), keeping the buffers. */
static void tw_atfork_child(void)
{
    pthread_mutex_init(&tw.mu, NULL);
    pthread_cond_init(&tw.work, NULL);
    pthread_cond_init(&tw.room, NULL);
    pthread_cond_init(&tw.idle, NULL);
    tw.head = tw.tail = 0;
    tw.sleeping = 0;
    tw.started = 0;
}

/* 1 when the thread runs (started now if need be); 0 when it cannot (the caller writes itself). */
static int tw_start(void)
{
    pthread_t th;
    pthread_attr_t attr;
    if (tw.started)
        return 1;
    if (tw.failed)
        return 0;
    if (!tw.buffers) {
        for (int i = 0; i < TW_SLOTS; i++) {
            tw.items[i].buf = (unsigned char *)malloc(TW_BUF);
            if (tw.items[i].buf == NULL) {
                tw.failed = 1;
                return 0;
            }
        }
        tw.buffers = 1;
        pthread_atfork(NULL, NULL, tw_atfork_child);
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&th, &attr, tw_main, NULL) != 0) {
        pthread_attr_destroy(&attr);
        tw.failed = 1;
        return 0;
    }
    pthread_attr_destroy(&attr);
    pthread_setname_np(th, "ibfab-tunwrite");
    tw.started = 1;
    return 1;
}

/* Nothing queued or being written: a write of the caller's own cannot overtake one. */
static int tw_idle(void)
{
    return !tw.started || __atomic_load_n(&tw.head, __ATOMIC_ACQUIRE) == __atomic_load_n(&tw.tail, __ATOMIC_ACQUIRE);
}

/* A buffer of TW_BUF octets to fill, waiting for one if all are queued; NULL without the thread. */
static unsigned char *tw_reserve(void)
{
    unsigned char *b;
    if (!tw_start())
        return NULL;
    pthread_mutex_lock(&tw.mu);
    while (tw.head - tw.tail == TW_SLOTS)
        pthread_cond_wait(&tw.room, &tw.mu);
    b = tw.items[tw.head % TW_SLOTS].buf;
    pthread_mutex_unlock(&tw.mu);
    return b;
}

/* Queue the buffer tw_reserve gave: ``len`` octets for ``fd``, ``counted`` of them for ``st``. */
static void tw_commit(int fd, size_t len, size_t counted, tw_stats *st)
{
    pthread_mutex_lock(&tw.mu);
    tw_item *it = &tw.items[tw.head % TW_SLOTS];
    it->fd = fd;
    it->len = len;
    it->counted = counted;
    it->st = st;
    __atomic_store_n(&tw.head, tw.head + 1, __ATOMIC_RELEASE);
    if (tw.sleeping)
        pthread_cond_signal(&tw.work);
    pthread_mutex_unlock(&tw.mu);
}

/* Wait until every queued write is done. */
static void tw_quiesce(void)
{
    if (!tw.started)
        return;
    pthread_mutex_lock(&tw.mu);
    while (tw.head != tw.tail)
        pthread_cond_wait(&tw.idle, &tw.mu);
    pthread_mutex_unlock(&tw.mu);
}

#endif
