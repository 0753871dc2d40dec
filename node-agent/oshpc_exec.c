/*
 * oshpc-exec: the first program in every sandbox, bound read-only at /.oshpc/exec.
 *
 *   /.oshpc/exec REPORT_FD -- COMMAND [ARG...]
 *
 * It reports to the node agent over REPORT_FD, one line per fact:
 *   "S <monotonic us>\n"          the command is about to run (start latency ends here)
 *   "E <errno> <command>\n"       the command could not be run (missing, not executable)
 *   "X <wait status> <user us> <system us> <max rss KiB>\n"   how the command ended
 * then exits with the command's code (128 + signal for a killed command, like a shell).
 *
 * It stays as the command's parent rather than exec'ing it, because bubblewrap reports a killed
 * command as exit code 128+N, which a command can also return on its own; only the parent sees
 * the real wait status. Signals it receives are forwarded to the command.
 *
 * Statically linked so that it runs in any image, whatever libc it has (or lacks).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t g_child = -1;

static void report(int fd, const char* text) {
  size_t left = strlen(text);
  while (left > 0) {
    ssize_t n = write(fd, text, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* the agent is gone; the sandbox is about to be killed anyway */
    text += n;
    left -= (size_t)n;
  }
}

static void report_error(int fd, int error, const char* command) {
  char line[PATH_MAX + 32];
  snprintf(line, sizeof line, "E %d %s\n", error, command);
  report(fd, line);
}

/* An executable regular file: access(X_OK) alone accepts directories. Returns 0 or an errno. */
static int check_executable(const char* path) {
  struct stat st;
  if (stat(path, &st) != 0) return errno;
  if (S_ISDIR(st.st_mode)) return EISDIR;
  if (!S_ISREG(st.st_mode)) return EACCES;
  return access(path, X_OK) == 0 ? 0 : errno;
}

/* Finds command on PATH the way execvp would; returns 0 and fills out, or an errno. */
static int resolve(const char* command, char* out, size_t size) {
  if (strchr(command, '/')) {
    snprintf(out, size, "%s", command);
    return check_executable(out);
  }
  const char* path = getenv("PATH");
  if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
  int error = ENOENT;
  while (*path) {
    const char* end = strchr(path, ':');
    size_t len = end ? (size_t)(end - path) : strlen(path);
    snprintf(out, size, "%.*s/%s", (int)len, len ? path : ".", command);
    int found = check_executable(out);
    if (found == 0) return 0;
    if (found != ENOENT && found != ENOTDIR) error = found; /* found but not runnable */
    path += len + (end ? 1 : 0);
  }
  return error;
}

static void forward_signal(int signo) {
  if (g_child > 0) kill(g_child, signo);
}

static void forward_signals(void) {
  static const int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = forward_signal;
  action.sa_flags = SA_RESTART;
  for (size_t i = 0; i < sizeof kForwarded / sizeof kForwarded[0]; ++i) {
    sigaction(kForwarded[i], &action, NULL);
  }
}

static long long micros(struct timeval tv) {
  return (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
}

int main(int argc, char** argv) {
  if (argc < 4 || strcmp(argv[2], "--") != 0) {
    fprintf(stderr, "usage: %s REPORT_FD -- COMMAND [ARG...]\n", argv[0]);
    return 127;
  }
  int fd = atoi(argv[1]);
  char** command = argv + 3;
  fcntl(fd, F_SETFD, FD_CLOEXEC); /* the command must not inherit the report channel */

  char path[PATH_MAX];
  int error = resolve(command[0], path, sizeof path);
  if (error != 0) {
    report_error(fd, error, command[0]);
    return 127;
  }

  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  char line[128];
  snprintf(line, sizeof line, "S %lld\n", (long long)now.tv_sec * 1000000LL + now.tv_nsec / 1000);
  report(fd, line);

  forward_signals();
  pid_t child = fork();
  if (child < 0) {
    report_error(fd, errno, command[0]);
    return 126;
  }
  if (child == 0) {
    execv(path, command);
    report_error(fd, errno, command[0]);
    _exit(126);
  }
  g_child = child;

  int status = 0;
  struct rusage usage;
  memset(&usage, 0, sizeof usage);
  while (wait4(child, &status, 0, &usage) < 0) {
    if (errno != EINTR) return 126;
  }
  snprintf(line, sizeof line, "X %d %lld %lld %ld\n", status, micros(usage.ru_utime),
           micros(usage.ru_stime), usage.ru_maxrss);
  report(fd, line);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
