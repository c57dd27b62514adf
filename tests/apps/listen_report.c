/* A socket-activated C program as libsystemd users write them: it reports what
 * sd_listen_fds_with_names() gave it, and the LISTEN_PIDFDID check libsystemd >= 258 makes
 * (the variable, if set, must be the pidfs inode of this very process), then READY=1. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char **names = NULL;
    int n = sd_listen_fds_with_names(0, &names);
    FILE *out = fopen(argv[1], "w");
    if (!out)
        return 1;
    fprintf(out, "fds %d\n", n);
    for (int i = 0; i < n; i++)
        fprintf(out, "name %s\n", names[i]);
    const char *pidfdid = getenv("LISTEN_PIDFDID");
    struct stat st;
    int pidfd = (int) syscall(SYS_pidfd_open, getpid(), 0);
    unsigned long long own = 0;
    if (pidfd >= 0 && fstat(pidfd, &st) == 0)
        own = (unsigned long long) st.st_ino;
    fprintf(out, "pidfdid %s own %llu\n", pidfdid ? pidfdid : "-", own);
    fclose(out);
    sd_notify(0, "READY=1");
    pause();
    return 0;
}
