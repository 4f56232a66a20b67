"""``python -m pidring.bench``: one Python process supervising an idle fleet, then killing it,
with pidring against ``subprocess.Popen`` + ``selectors`` (what Airflow's supervisor does).

Each task is a small tree, the shape of an Airflow task: a shell (the "task runner") with a
plain background child and a ``setsid`` child (a daemon in its own session), all holding
the task's stdout and stderr; the ``setsid`` child prints ``ready`` once it runs in its own
session. The supervisor
starts N tasks, waits until every one is ready, measures its own memory and open fds, then
kills them all with SIGKILL and waits until it sees every task end. *Survivors* are the
tasks' processes still alive at that moment (found in ``/proc`` by a tag in their
environment, wherever they were reparented); the harness kills them afterwards, through
pidfds, and counts anything it could not as *leftover*.

Rows (each in a fresh interpreter, so one row's heap never colours another's figures):

* ``pidring``: ``pidring.Pool()`` (containment ``auto``: a cgroup per task where possible),
  ``Task.kill()`` (SIGKILL to the whole tree), events read from ``pool.events()``;
* ``pidring-pg``: the same with ``containment="process-group"`` (the ``setsid`` child is
  found from the shell when the tree is signalled, since its parent still lives);
* ``popen``: ``subprocess.Popen`` with stdout/stderr pipes registered in a ``selectors``
  loop, ``Popen.kill()`` (SIGKILL to the main process), ``Popen.wait()``;
* ``popen-killpg``: the same with ``start_new_session=True`` and ``os.killpg`` (Airflow's fix
  in apache/airflow#65738).

Columns: tasks held at once; spawn s (all started and ready); RSS/task (supervisor RSS with
the fleet up minus after set-up, over N); fds (open in the supervisor with the fleet up);
kill-all s (first kill until the supervisor saw every task end: Done for pidring, every main
process reaped for Popen); survivors; hung (tasks whose pipes had no EOF 2 s after kill-all:
a survivor holds them, so a selectors loop waiting for EOF waits forever); CPU s (the
supervisor's own, spawn and kill phases).

    python -m pidring.bench                     # 1,000 tasks, every row
    python -m pidring.bench --tasks 5000 --rows pidring,popen
    python -m pidring.bench --quick             # 100 tasks (CI); exit 1 on a failed check

Exit status 1 if a row failed, left processes behind (leftover), or if the ``pidring`` row
(cgroup mode) had survivors or hung tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
import uuid

TAG_VAR = "PIDRING_PYBENCH_TAG"
ROWS = {
    "pidring": "pidring.Pool, Task.kill()",
    "pidring-pg": "pidring.Pool(process-group), Task.kill()",
    "popen": "Popen + selectors, Popen.kill()",
    "popen-killpg": "Popen + selectors, os.killpg() (#65738)",
}
# "ready" comes from the setsid child once it is in its own session, so the tree is whole.
TREE = "sleep 100000 & setsid sh -c 'echo ready; exec sleep 100000' & wait"
PROCESSES_PER_TASK = 3
DEADLINE = 60.0


# --- measuring --------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tagged(tag: str):
    """Pids of live (non-zombie) processes whose environment carries the tag."""
    needle = f"{TAG_VAR}={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2:].split()[0] != b"Z":
            pids.append(int(entry))
    return pids


def kill_leftovers(tag: str) -> int:
    """SIGKILLs (through pidfds) whatever carries the tag; returns how many stay alive."""
    deadline = time.monotonic() + 10
    while True:
        pids = tagged(tag)
        if not pids or time.monotonic() > deadline:
            return len(pids)
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)
        time.sleep(0.05)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the supervisors ----------------------------------------------------------------------------


def run_pidring(n: int, env: dict, containment: str, result: dict) -> None:
    import pidring

    pool = pidring.Pool(containment=containment)
    result["notes"] = f"containment {pool.containment}, backend {pool.backend}"
    rss0, cpu0, t0 = rss_bytes(), cpu_seconds(), time.monotonic()
    tasks = [pool.spawn(["sh", "-c", TREE], extra_env=env) for _ in range(n)]
    ready = 0
    for event in pool.events(timeout=DEADLINE):
        if isinstance(event, pidring.Output) and b"ready" in event.data:
            ready += 1
            if ready == n:
                break
    result.update(held=ready, spawn_s=time.monotonic() - t0, spawn_cpu_s=cpu_seconds() - cpu0,
                  rss_per_task=(rss_bytes() - rss0) / n, fds=open_fds())
    cpu1, t1 = cpu_seconds(), time.monotonic()
    for task in tasks:
        task.kill()
    done = 0
    for event in pool.events(timeout=DEADLINE):
        if isinstance(event, pidring.Done):
            done += 1
            if done == n:
                break
    result.update(kill_s=time.monotonic() - t1, kill_cpu_s=cpu_seconds() - cpu1, hung=n - done)
    result["survivors"] = len(tagged(env[TAG_VAR]))
    pool.close()


def run_popen(n: int, env: dict, killpg: bool, result: dict) -> None:
    selector = selectors.DefaultSelector()
    full_env = {**os.environ, **env}
    rss0, cpu0, t0 = rss_bytes(), cpu_seconds(), time.monotonic()
    procs = []
    for _ in range(n):
        p = subprocess.Popen(["sh", "-c", TREE], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=full_env, start_new_session=killpg)
        for pipe in (p.stdout, p.stderr):
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, selectors.EVENT_READ, p)
        procs.append(p)
    ready = 0
    deadline = time.monotonic() + DEADLINE
    while ready < n and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            data = os.read(key.fd, 65536)
            if b"ready" in data:
                ready += 1
            if not data:
                selector.unregister(key.fileobj)
    result.update(held=ready, spawn_s=time.monotonic() - t0, spawn_cpu_s=cpu_seconds() - cpu0,
                  rss_per_task=(rss_bytes() - rss0) / n, fds=open_fds())
    cpu1, t1 = cpu_seconds(), time.monotonic()
    for p in procs:
        if killpg:
            os.killpg(p.pid, signal.SIGKILL)  # Airflow #65738: the task's process group
        else:
            p.kill()  # SIGKILL to the main process
    for p in procs:
        p.wait()
    result.update(kill_s=time.monotonic() - t1, kill_cpu_s=cpu_seconds() - cpu1)
    result["survivors"] = len(tagged(env[TAG_VAR]))
    # Hung: pipes with no EOF 2 s after kill-all (a survivor holds them open).
    deadline = time.monotonic() + 2.0
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            if not os.read(key.fd, 65536):
                selector.unregister(key.fileobj)
    result["hung"] = len({key.data.pid for key in selector.get_map().values()})
    selector.close()
    for p in procs:
        p.stdout.close()
        p.stderr.close()


def run_row(row: str, n: int) -> dict:
    raise_fd_limit()
    tag = uuid.uuid4().hex
    env = {TAG_VAR: tag}
    result = {"row": row, "tasks": n, "status": "ok"}
    try:
        if row == "pidring":
            run_pidring(n, env, "auto", result)
        elif row == "pidring-pg":
            run_pidring(n, env, "process-group", result)
        elif row == "popen":
            run_popen(n, env, killpg=False, result=result)
        elif row == "popen-killpg":
            run_popen(n, env, killpg=True, result=result)
        else:
            raise ValueError(f"unknown row {row!r}")
    except Exception as e:  # reported in the table; the exit status says it failed
        result.update(status="failed", reason=f"{type(e).__name__}: {e}")
    result["leftover"] = kill_leftovers(tag)
    return result


# --- the table ----------------------------------------------------------------------------------


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if abs(n) < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def table(results, n: int) -> str:
    head = ("supervisor", "held", "spawn s", "RSS/task", "fds", "kill-all s", "survivors", "hung", "CPU s")
    lines = []
    for r in results:
        if r["status"] != "ok":
            lines.append((ROWS.get(r["row"], r["row"]), "failed: " + r.get("reason", "")))
            continue
        lines.append((
            ROWS[r["row"]], str(r["held"]), f"{r['spawn_s']:.2f}", fmt_bytes(r["rss_per_task"]),
            str(r["fds"]), f"{r['kill_s']:.3f}", str(r["survivors"]), str(r["hung"]),
            f"{r['spawn_cpu_s'] + r['kill_cpu_s']:.2f}",
        ))
    widths = [max(len(head[i]), *(len(l[i]) for l in lines if len(l) == len(head))) for i in range(len(head))]
    out = [
        f"{n} idle tasks, each a tree of {PROCESSES_PER_TASK} processes (sh; sleep &; setsid sleep &), "
        f"then SIGKILL to all",
        "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    for l in lines:
        out.append(("  ".join(c.ljust(w) for c, w in zip(l, widths)) if len(l) == len(head) else "  ".join(l)).rstrip())
    by_row = {r["row"]: r for r in results if r["status"] == "ok"}
    if "pidring" in by_row and "popen" in by_row and by_row["pidring"]["rss_per_task"] > 0:
        ratio = by_row["popen"]["rss_per_task"] / by_row["pidring"]["rss_per_task"]
        out.append(f"RSS per task: Popen + selectors uses {ratio:.1f}x pidring's "
                   f"({fmt_bytes(by_row['popen']['rss_per_task'])} vs {fmt_bytes(by_row['pidring']['rss_per_task'])})")
    for r in results:
        if r.get("notes"):
            out.append(f"{r['row']}: {r['notes']}")
        if r.get("leftover"):
            out.append(f"{r['row']}: {r['leftover']} processes could not be killed afterwards (leftover)")
    return "\n".join(out)


def failed_checks(results):
    problems = []
    for r in results:
        if r["status"] != "ok":
            problems.append(f"{r['row']}: {r.get('reason')}")
        if r.get("leftover"):
            problems.append(f"{r['row']}: {r['leftover']} leftover processes")
        if r["row"] == "pidring" and r["status"] == "ok":
            if "cgroup" in r.get("notes", "") and r["survivors"]:
                problems.append(f"pidring: {r['survivors']} survivors in cgroup mode")
            if r["hung"] or r["held"] != r["tasks"]:
                problems.append(f"pidring: {r['hung']} hung, {r['held']}/{r['tasks']} held")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pidring.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=None, help="tasks per row (default 1000, 100 with --quick)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="100 tasks: seconds (CI)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row, print JSON
    args = parser.parse_args(argv)
    n = args.tasks or (100 if args.quick else 1000)
    if args.row:
        print(json.dumps(run_row(args.row, n)))
        return 0
    results = []
    for row in args.rows.split(","):
        proc = subprocess.run([sys.executable, "-m", "pidring.bench", "--row", row, "--tasks", str(n)],
                              stdout=subprocess.PIPE, text=True)
        try:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            results.append({"row": row, "tasks": n, "status": "failed",
                            "reason": f"the row's process exited {proc.returncode} without a result"})
        print(f"{row}: done", file=sys.stderr, flush=True)
    print(table(results, n))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": 1, "tasks": n, "command": sys.argv, "results": results}, f, indent=2)
    problems = failed_checks(results)
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
