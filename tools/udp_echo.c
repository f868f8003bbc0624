/* Baselines for tools/bench_transport.py: a UDP echo server, an echo client timing
 * round trips, and a datagram stream (sender + sink) for throughput. Loopback only.
 *
 *   udp_echo server PORT                 echo every datagram back (until one of 1 byte)
 *   udp_echo client PORT SIZE COUNT      print the mean round trip in microseconds
 *   udp_echo sink PORT EXPECT_BYTES      receive; print bytes and seconds (first..last)
 *   udp_echo stream PORT SIZE BYTES      send BYTES in datagrams of SIZE bytes
 *
 * The stream resends one 64 KiB buffer, which never leaves the cache, and nothing
 * checks what arrives. With "work", the two ends also do the byte work a netdam
 * datagram costs, with netdam's own CRC32C (nd_crc32c, linked in from the fast path):
 *
 *   udp_echo sink-work PORT EXPECT_BYTES MEM_BYTES    check each datagram's CRC32C
 *       trailer and copy its payload into a memory of MEM_BYTES; print bytes, seconds
 *       and how many datagrams failed the check
 *   udp_echo stream-work PORT SIZE BYTES MEM_BYTES    send BYTES, each datagram a
 *       header, the next payload of a buffer of MEM_BYTES and a CRC32C trailer
 *
 * (a compiled netdam's floor: its WRITE cannot beat the work stream). And without the
 * CRC32C, what sending from a large memory alone costs next to the cached buffer:
 *
 *   udp_echo stream-mem PORT SIZE BYTES MEM_BYTES     stream-work's datagrams, trailer
 *       left zero (for the plain sink)
 *
 * Built with
 * the fast path's source, whose generated defines give the header's length.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define HEAD ND_HEADER_LEN            /* from the fast path's generated layout */

uint32_t nd_crc32c(uint32_t crc, const uint8_t *buf, size_t len);   /* fastpath.c */

static uint8_t *memory_of(long long bytes) {
    uint8_t *mem = malloc(bytes);
    if (!mem) { perror("malloc"); exit(1); }
    for (long long i = 0; i < bytes; i++)      /* touched, and not all one value */
        mem[i] = (uint8_t)(i * 2654435761u >> 24);
    return mem;
}

static int udp_socket(int port, struct sockaddr_in *peer) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    memset(peer, 0, sizeof *peer);
    peer->sin_family = AF_INET;
    peer->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    peer->sin_port = htons(port);
    return fd;
}

int main(int argc, char **argv) {
    static char buf[65536];
    struct sockaddr_in addr, from;
    socklen_t flen = sizeof from;
    if (argc < 3) {
        fprintf(stderr, "usage: %s server|client|sink|stream PORT ...\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[2]);
    int fd = udp_socket(port, &addr);
    if (!strcmp(argv[1], "server") || !strncmp(argv[1], "sink", 4)) {
        if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
        printf("ready\n");
        fflush(stdout);
    }
    if (!strcmp(argv[1], "server")) {
        for (;;) {
            ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
            if (n == 1) return 0;
            if (n > 0) sendto(fd, buf, n, 0, (struct sockaddr *)&from, flen);
        }
    } else if (!strcmp(argv[1], "client") && argc == 5) {
        int size = atoi(argv[3]), count = atoi(argv[4]);
        double t0 = now();
        for (int i = 0; i < count; i++) {
            sendto(fd, buf, size, 0, (struct sockaddr *)&addr, sizeof addr);
            recv(fd, buf, sizeof buf, 0);
        }
        printf("%.3f\n", (now() - t0) / count * 1e6);
    } else if (!strcmp(argv[1], "sink") && argc == 4) {
        long long expect = atoll(argv[3]), got = 0;
        double first = 0, last = 0;
        struct timeval tv = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        while (got < expect) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;               /* idle for a second: the rest was lost */
            last = now();
            if (!got) first = last;
            got += n;
        }
        printf("%lld %.6f\n", got, last - first);
    } else if (!strcmp(argv[1], "sink-work") && argc == 5) {
        long long expect = atoll(argv[3]), got = 0, bad = 0;
        long long size = atoll(argv[4]), at = 0;
        uint8_t *mem = memory_of(size);
        double first = 0, last = 0;
        struct timeval tv = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        while (got < expect) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            last = now();
            if (!got) first = last;
            got += n;
            if (n < HEAD + 4) { bad++; continue; }
            uint32_t want;
            memcpy(&want, buf + n - 4, 4);
            if (nd_crc32c(0, (const uint8_t *)buf, n - 4) != ntohl(want)) { bad++; continue; }
            size_t plen = n - HEAD - 4;
            if (at + plen > size) at = 0;
            memcpy(mem + at, buf + HEAD, plen);
            at += plen;
        }
        printf("%lld %.6f %lld\n", got, last - first, bad);
    } else if ((!strcmp(argv[1], "stream-work") || !strcmp(argv[1], "stream-mem"))
               && argc == 6) {
        int crc_on = !strcmp(argv[1], "stream-work");
        int size = atoi(argv[3]);
        long long total = atoll(argv[4]), msize = atoll(argv[5]), at = 0;
        uint8_t *mem = memory_of(msize);
        uint8_t head[HEAD] = {0x4e, 0x44}, trailer[4];
        size_t plen = size - HEAD - 4;
        struct iovec iov[3] = {{head, HEAD}, {NULL, plen}, {trailer, 4}};
        struct msghdr msg = {.msg_name = &addr, .msg_namelen = sizeof addr, .msg_iov = iov,
                             .msg_iovlen = 3};
        for (long long sent = 0; sent < total; sent += size) {
            if (at + plen > msize) at = 0;
            iov[1].iov_base = mem + at;
            at += plen;
            memcpy(head + 8, &sent, sizeof sent);            /* a sequence of sorts */
            uint32_t crc = crc_on ? htonl(nd_crc32c(nd_crc32c(0, head, HEAD),
                                                    iov[1].iov_base, plen)) : 0;
            memcpy(trailer, &crc, 4);
            while (sendmsg(fd, &msg, 0) < 0) {}
        }
    } else if (!strcmp(argv[1], "stream") && argc == 5) {
        int size = atoi(argv[3]);
        long long total = atoll(argv[4]);
        for (long long sent = 0; sent < total; sent += size)
            while (sendto(fd, buf, size, 0, (struct sockaddr *)&addr, sizeof addr) < 0) {}
    } else {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    return 0;
}
