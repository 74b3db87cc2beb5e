// SPDX-License-Identifier: GPL-2.0
/*
 * dio_race <device> <blocks> <reads>: direct reads of random 4 KiB blocks of <device> into one
 * buffer while another thread keeps writing into that same buffer. A verity target hashes the
 * buffer after the device below filled it, so it can see data the writer changed: that is not
 * corruption of the device and must not fail the read. Prints the counts; exits 1 if any read
 * failed, 2 on a usage or setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BS 4096

static unsigned char *buf;
static volatile int stop;
static unsigned long scribbles;

static void *scribble(void *arg)
{
	unsigned int i = 0;

	(void)arg;
	while (!stop) {
		((volatile unsigned char *)buf)[(i * 97) % BS] ^= 0x5a;
		i++;
	}
	scribbles = i;
	return NULL;
}

int main(int argc, char **argv)
{
	long blocks, reads, i, failed = 0, eio = 0;
	pthread_t t;
	int fd;

	if (argc != 4)
		return fprintf(stderr, "usage: %s <device> <blocks> <reads>\n", argv[0]), 2;
	blocks = atol(argv[2]);
	reads = atol(argv[3]);
	fd = open(argv[1], O_RDONLY | O_DIRECT);
	if (fd < 0 || blocks <= 0)
		return perror(argv[1]), 2;
	if (posix_memalign((void **)&buf, BS, BS))
		return 2;
	memset(buf, 0, BS);
	srandom(getpid());
	if (pthread_create(&t, NULL, scribble, NULL))
		return 2;
	for (i = 0; i < reads; i++) {
		off_t off = (off_t)(random() % blocks) * BS;
		ssize_t n = pread(fd, buf, BS, off);

		if (n != BS) {
			failed++;
			if (n < 0 && errno == EIO)
				eio++;
			if (failed <= 5)
				fprintf(stderr, "read at %lld: %s\n", (long long)off,
					n < 0 ? strerror(errno) : "short read");
		}
	}
	stop = 1;
	pthread_join(t, NULL);
	printf("%ld direct reads with a writer racing into the buffer (%lu writes): %ld failed, %ld EIO\n",
	       reads, scribbles, failed, eio);
	return failed ? 1 : 0;
}
