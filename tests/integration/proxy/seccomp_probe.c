/* Tries each system call the sandbox seccomp profiles block, with arguments that fail
 * harmlessly, plus a few that must keep working; prints "NAME ERRNO" per line (0: success).
 * Built with -static so that it runs in any image. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char* name, long rc) {
  printf("%s %d\n", name, rc < 0 ? errno : 0);
}

/* A raw clone without a new stack behaves like fork: the child leaves at once. */
static long try_clone(unsigned long flags) {
  long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
  return pid < 0 ? -1 : 0;
}

int main(void) {
  report("bpf", syscall(SYS_bpf, 5, NULL, 0));
  report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
  report("userfaultfd", syscall(SYS_userfaultfd, 0x7fffffff));
  report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0xffffffffUL));
  report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0xffffffffUL));
  report("init_module", syscall(SYS_init_module, NULL, 0, ""));
  report("finit_module", syscall(SYS_finit_module, -1, "", 0));
  report("delete_module", syscall(SYS_delete_module, "oshpc_none", 0));
  report("keyctl", syscall(SYS_keyctl, 0x7fff, 0, 0, 0, 0));
  report("add_key", syscall(SYS_add_key, NULL, NULL, NULL, 0, 0));
  report("request_key", syscall(SYS_request_key, NULL, NULL, NULL, 0));
  report("fsopen", syscall(SYS_fsopen, NULL, 0));
  report("fsconfig", syscall(SYS_fsconfig, -1, 0, NULL, NULL, 0));
  report("fsmount", syscall(SYS_fsmount, -1, 0, 0));
  report("fspick", syscall(SYS_fspick, -1, NULL, 0));
  report("move_mount", syscall(SYS_move_mount, -1, NULL, -1, NULL, 0));
  report("open_tree", syscall(SYS_open_tree, -1, NULL, 0));
  report("mount_setattr", syscall(SYS_mount_setattr, -1, NULL, 0, NULL, 0));
  report("mount", syscall(SYS_mount, NULL, NULL, NULL, 0, NULL));
  report("umount2", syscall(SYS_umount2, NULL, 0));
  report("pivot_root", syscall(SYS_pivot_root, NULL, NULL));
  report("swapon", syscall(SYS_swapon, NULL, 0));
  report("swapoff", syscall(SYS_swapoff, NULL));
  report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
  report("ptrace", syscall(SYS_ptrace, 0x7fff, 0, NULL, NULL));
  report("process_vm_readv", syscall(SYS_process_vm_readv, getpid(), NULL, 0, NULL, 0, 0));
  report("process_vm_writev", syscall(SYS_process_vm_writev, getpid(), NULL, 0, NULL, 0, 0));
  report("personality_bsd", syscall(SYS_personality, PER_BSD));
  report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
  report("clone_user", try_clone(CLONE_NEWUSER));
  report("clone3", syscall(SYS_clone3, NULL, 0));
  report("ioctl_tiocsti", syscall(SYS_ioctl, 0, TIOCSTI, "x"));
  report("ioctl_tioclinux", syscall(SYS_ioctl, 0, TIOCLINUX, "x"));

  /* Must keep working. */
  int fds[2];
  int available = 0;
  report("allowed_getpid", syscall(SYS_getpid));
  report("allowed_personality_query", syscall(SYS_personality, 0xffffffffUL));
  report("allowed_fork", try_clone(0));
  report("allowed_pipe", pipe(fds));
  report("allowed_ioctl_fionread", ioctl(fds[0], FIONREAD, &available));
  report("allowed_open", open("/etc/os-release", O_RDONLY));
  report("allowed_socket", socket(AF_INET, SOCK_STREAM, 0));
  return 0;
}
