"""Helpers for tests that need a real Slurm cluster: the one-node cluster that
slurm-fixture.sh starts on localhost, or one already running.

Tests get a SlurmCluster from the `slurm_cluster` fixture (conftest.py) and use:
  cluster.run_as(user, cmd, env=None, cwd=None, timeout=60, check=True)
  cluster.srun(args, user=None, ...)            # srun ARGS, as user (default: cluster.user)
  cluster.submit_batch(script, array=None, user=None, wait=True, sbatch_args=(), ...)
  cluster.job_state(job_id), cluster.wait_job_gone(job_id), cluster.cancel(job_id)
  cluster.processes_of(user)                    # pids left behind by a user
  cluster.shared_dir(name)                      # a fresh directory every user can write
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

HERE = Path(__file__).resolve().parent
FIXTURE_SCRIPT = HERE / "slurm-fixture.sh"
TEST_USER = "oshpc"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# mpirun refuses to run as root unless told twice; tests run some jobs as root on purpose.
ROOT_MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

Command = str | Sequence[str]


class SlurmError(RuntimeError):
    """A Slurm command failed; the message carries its argv, exit status and output."""


def is_root() -> bool:
    return os.geteuid() == 0


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def slurm_answers() -> bool:
    """True when sinfo reaches a controller (a cluster we can use is already running)."""
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                          timeout=15, check=False)
    return done.returncode == 0 and done.stdout.strip() != ""


def fixture_script(action: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs slurm-fixture.sh ACTION; raises SlurmError with its output on failure."""
    done = subprocess.run([str(FIXTURE_SCRIPT), action], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise SlurmError(f"slurm-fixture.sh {action} failed ({done.returncode}):\n"
                         f"{done.stdout}{done.stderr}")
    return done


def _clean_env(user: str, env: Mapping[str, str] | None) -> dict[str, str]:
    """A small predictable environment: Slurm copies the submitter's env into the job."""
    entry = pwd.getpwnam(user)
    base = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "LANG": "C.UTF-8",
            "HOME": entry.pw_dir, "USER": user, "LOGNAME": user}
    if "SLURM_CONF" in os.environ:
        base["SLURM_CONF"] = os.environ["SLURM_CONF"]
    if user == "root":
        base.update(ROOT_MPI_ENV)
    base.update(env or {})
    return base


def _argv(cmd: Command) -> list[str]:
    return ["/bin/bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)


@dataclasses.dataclass
class BatchJob:
    job_id: int
    submitted: subprocess.CompletedProcess


@dataclasses.dataclass
class SlurmCluster:
    node: str
    user: str = TEST_USER            # the ordinary user that jobs run as by default
    started_here: bool = False       # whether the session fixture must stop it

    def run_as(self, user: str | None, cmd: Command, env: Mapping[str, str] | None = None,
               cwd: str | os.PathLike | None = None, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess:
        """Runs CMD (argv list, or a string for bash -c) as USER with a clean env plus ENV.

        Fails with SlurmError when check and the exit status is not 0, or TimeoutExpired."""
        user = user or self.user
        argv = ["env", "-i", *(f"{k}={v}" for k, v in _clean_env(user, env).items()),
                *_argv(cmd)]
        if user != current_user():
            if not is_root():
                raise SlurmError(f"cannot run as {user}: not root")
            argv = ["runuser", "-u", user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise SlurmError(f"{_argv(cmd)} as {user} exited {done.returncode}:\n"
                             f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return done

    def srun(self, args: Sequence[str], user: str | None = None, **kw) -> \
            subprocess.CompletedProcess:
        """srun ARGS as USER; keyword arguments as for run_as."""
        return self.run_as(user, ["srun", *args], **kw)

    def submit_batch(self, script: str | os.PathLike, array: str | None = None,
                     user: str | None = None, wait: bool = True,
                     sbatch_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike | None = None,
                     timeout: float = 120) -> BatchJob:
        """sbatch SCRIPT (a path, or the script's text) as USER, optionally --array=ARRAY.

        With wait, returns when every task has ended (sbatch --wait); sbatch then exits
        non-zero if any task failed, which raises SlurmError."""
        args = ["sbatch", "--parsable", *sbatch_args]
        if array is not None:
            args.append(f"--array={array}")
        if wait:
            args.append("--wait")
        text = None
        if isinstance(script, os.PathLike) or (isinstance(script, str)
                                               and not script.startswith("#!")):
            args.append(str(script))
        else:
            text = script          # sbatch reads the script from stdin
        user = user or self.user
        argv = ["env", "-i", *(f"{k}={v}" for k, v in _clean_env(user, env).items()), *args]
        if user != current_user():
            argv = ["runuser", "-u", user, "--", *argv]
        done = subprocess.run(argv, input=text, capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, check=False)
        match = re.search(r"^(\d+)", done.stdout.strip())
        if done.returncode != 0 or match is None:
            raise SlurmError(f"{args} as {user} exited {done.returncode}:\n"
                             f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return BatchJob(int(match.group(1)), done)

    def job_state(self, job_id: int) -> str | None:
        """JobState of JOB_ID (of its first array task), or None once Slurm forgot it."""
        done = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)],
                              capture_output=True, text=True, timeout=15, check=False)
        match = re.search(r"\bJobState=(\S+)", done.stdout)
        return match.group(1) if done.returncode == 0 and match else None

    def wait_state(self, job_id: int, states: Sequence[str], timeout: float = 30) -> str:
        """Waits until JOB_ID is in one of STATES; returns it or raises SlurmError."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} is {state}, not {list(states)}, "
                                 f"after {timeout}s")
            time.sleep(0.2)

    def cancel(self, job_id: int, signal: str | None = None) -> None:
        args = ["scancel", str(job_id)] + ([f"--signal={signal}"] if signal else [])
        subprocess.run(args, capture_output=True, text=True, timeout=15, check=True)

    def wait_job_gone(self, job_id: int, timeout: float = 30) -> None:
        """Waits until JOB_ID has no step left running on the node (slurmstepd gone)."""
        deadline = time.monotonic() + timeout
        while self._steps_of(job_id):
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} still has steps after {timeout}s")
            time.sleep(0.2)

    def processes_of(self, user: str | None = None) -> list[str]:
        """'pid command' lines of every process USER owns on this node."""
        done = subprocess.run(["ps", "-u", user or self.user, "-o", "pid=,args="],
                              capture_output=True, text=True, timeout=15, check=False)
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def shared_dir(self, path: str | os.PathLike) -> Path:
        """Creates PATH (e.g. under tmp_path_factory) writable by every user, and its
        parents searchable, so jobs of the test user can write there."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o1777)
        for parent in path.parents:
            if parent == Path("/") or parent == Path("/tmp"):
                break
            parent.chmod(parent.stat().st_mode | 0o711)
        return path

    def _steps_of(self, job_id: int) -> list[str]:
        done = subprocess.run(["pgrep", "-a", "-x", "slurmstepd"], capture_output=True,
                              text=True, timeout=15, check=False)
        return [line for line in done.stdout.splitlines()
                if re.search(rf"\[{job_id}[._]", line)]


def node_name() -> str:
    done = subprocess.run(["sinfo", "-h", "-o", "%n"], capture_output=True, text=True,
                          timeout=15, check=True)
    return done.stdout.split()[0]
