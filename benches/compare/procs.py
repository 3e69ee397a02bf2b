"""Process handling and /proc readings for the comparison (stdlib only, Linux).

Every process the comparison starts goes through `Proc`: it runs in its own
session (so its own process group), its descendants are snapshotted before it
is stopped, and `stop()` ends the group with SIGTERM, then SIGKILL, then kills
any descendant still alive (children that moved to their own process groups,
as mcphop's and supergateway's stdio children do). The orchestrator also
makes itself a child subreaper, so orphans are reparented to it and
`reap_orphans()` can find and end them.
"""

import ctypes
import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36

_live = []  # every Proc not yet stopped


def become_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    return raw[raw.rfind(b")") + 2:].split()


def ppid_of(pid):
    f = stat_fields(pid)
    return int(f[1]) if f else None


def start_time(pid):
    f = stat_fields(pid)
    return int(f[19]) if f else None  # field 22 (starttime)


def cmdline(pid):
    raw = _read(f"/proc/{pid}/cmdline")
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() if raw else ""


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children_map():
    kids = {}
    for pid in all_pids():
        pp = ppid_of(pid)
        if pp is not None:
            kids.setdefault(pp, []).append(pid)
    return kids


def descendants(root, kids=None):
    kids = kids if kids is not None else children_map()
    out, stack = [], list(kids.get(root, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def split_tree(root, upstream_marker):
    """(proxy pids, stdio-child pids): the root's process tree, with every
    subtree whose command line names the upstream command moved to the
    second list (a `sh -c CMD` wrapper counts as the child)."""
    kids = children_map()
    proxy, child = [root], []
    stack = list(kids.get(root, []))
    while stack:
        p = stack.pop()
        if upstream_marker in cmdline(p):
            child.append(p)
            child.extend(descendants(p, kids))
        else:
            proxy.append(p)
            stack.extend(kids.get(p, []))
    return proxy, child


def status_kib(pid, key):
    raw = _read(f"/proc/{pid}/status")
    if raw is None:
        return 0
    for line in raw.decode().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_kib(pids):
    return sum(status_kib(p, "VmRSS") for p in pids)


def cpu_seconds(pids):
    """utime+stime of each process (all its threads, live and exited)."""
    total = 0
    for p in pids:
        f = stat_fields(p)
        if f:
            total += int(f[11]) + int(f[12])  # fields 14, 15
    return total / CLK_TCK


def fd_count(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


def ctx_switches(pids):
    """Voluntary + nonvoluntary context switches summed over every thread."""
    total = 0
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            raw = _read(f"/proc/{p}/task/{t}/status")
            if raw is None:
                continue
            for line in raw.decode().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
    return total


def thread_count(pids):
    return sum(status_kib(p, "Threads") for p in pids)


def _alive_same(pid, started):
    return start_time(pid) == started and (stat_fields(pid) or [b"Z"])[0] != b"Z"


class Proc:
    def __init__(self, argv, *, log_path, env=None, stdin=subprocess.DEVNULL, stdout=None, cwd=None):
        self.argv = argv
        self.log = open(log_path, "ab")
        self.log.write(("\n$ " + " ".join(argv) + "\n").encode())
        self.log.flush()
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout if stdout is not None else self.log,
            stderr=self.log,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.p.pid
        _live.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, grace=5.0):
        if self not in _live:
            return
        kids = children_map()
        tree = [(d, start_time(d)) for d in descendants(self.pid, kids)]
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive_same(d, st) for d, st in tree):
            time.sleep(0.05)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        me = os.getpgrp()
        for d, st in tree:
            if st is not None and _alive_same(d, st):
                try:
                    pg = os.getpgid(d)
                    if pg not in (me, 0, 1):
                        os.killpg(pg, signal.SIGKILL)
                    os.kill(d, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        reap_orphans()
        _live.remove(self)
        self.log.close()


def reap_orphans():
    """Kill and reap any process reparented to us (we are a subreaper)."""
    me = os.getpid()
    ours = {pr.pid for pr in _live}
    orphans = [pid for pid in all_pids() if ppid_of(pid) == me and pid not in ours]
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2.0
    for pid in orphans:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)


def stop_all():
    for pr in list(reversed(_live)):
        try:
            pr.stop(grace=3.0)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass
    reap_orphans()


def foreign_cpu():
    """{pid: (starttime, CPU seconds)} of every process outside our own tree
    (other users of this machine's CPUs), for foreign_load()."""
    kids = children_map()
    mine = set(descendants(os.getpid(), kids)) | {os.getpid()}
    snap = {}
    for pid in all_pids():
        if pid in mine:
            continue
        f = stat_fields(pid)
        if f:
            snap[pid] = (int(f[19]), (int(f[11]) + int(f[12])) / CLK_TCK)
    return snap


def foreign_load(before, after, seconds):
    """CPUs' worth of work done outside our tree between two snapshots."""
    used = 0.0
    for pid, (st, cpu) in after.items():
        b = before.get(pid)
        used += cpu - b[1] if b and b[0] == st else 0.0
    return used / seconds if seconds > 0 else 0.0
