/* Baselines for tools/bench_transport.py: a UDP echo server, an echo client timing
 * round trips, and a datagram stream (sender + sink) for throughput. Loopback only.
 *
 *   udp_echo server PORT                 echo every datagram back (until one of 1 byte)
 *   udp_echo client PORT SIZE COUNT      print the mean round trip in microseconds
 *   udp_echo sink PORT EXPECT_BYTES      receive; print bytes and seconds (first..last)
 *   udp_echo stream PORT SIZE BYTES      send BYTES in datagrams of SIZE bytes
 */
#include <arpa/inet.h>
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
    if (!strcmp(argv[1], "server") || !strcmp(argv[1], "sink")) {
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
