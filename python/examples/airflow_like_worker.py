"""An Airflow-like worker built on pidring: one Python process supervises every task.

The scenario of pidring's founding bug, end to end. In Airflow 3, each running task costs a
supervisor process of its own; it heartbeats to the execution API on the task's behalf,
and when the API answers 409 (the task was marked failed elsewhere) it kills the task
runner, whose own child interpreter is reparented to PID 1 and runs on. Here:

* a small **execution API** (stdlib ``http.server`` on loopback, in a thread) hands out task
  instances, answers heartbeats (409 once a task is no longer running) and takes their
  final state; an **admin** call marks running tasks failed;
* a **worker** built on :class:`pidring.Pool` runs each task instance as a Python
  **task runner** (``python airflow_like_worker.py task-runner ...``) that starts a **child
  interpreter** (``sys.executable``: the virtualenv's Python) which loops for a while;
* each task runner heartbeats to the worker over a framed pidring channel (``spawn(channels=1)``:
  length-prefixed frames on a socketpair, as Airflow's runner talks to its supervisor), and
  the worker forwards every heartbeat to the API over one keep-alive connection and answers
  the runner; on a 409 it terminates that task's whole tree (SIGTERM, SIGKILL after
  ``grace``).

What the run checks (and prints): every failed task's tree is gone within ``grace``; no
child interpreter ever runs with another parent than its runner (each checks ``getppid()``
every 0.1 s and logs it if it changed, and a monitor scans ``/proc`` every 0.2 s for the
tasks' processes whose parent is PID 1; one caught in the instant between its runner's death
and its own, with SIGTERM already pending, is dying, not running, and is counted apart); the
worker never raises; every other task succeeds; and the worker's RSS per running task.

    python python/examples/airflow_like_worker.py                 # 200 tasks, 20 failed
    python python/examples/airflow_like_worker.py --tasks 40 --fail 4 --task-seconds 10

Exit status 0 when every check passed.
"""

from __future__ import annotations

import os
import signal
import sys
import time

# --- the task runner and its child (run as separate processes; kept import-light) ----------


def task_child(task_id: str, seconds: str, orphan_log: str) -> int:
    """The task's own work: a loop that notices if it was orphaned (its parent changed)."""
    parent = os.getppid()
    print(f"task {task_id}: child {os.getpid()} working", flush=True)
    end = time.monotonic() + float(seconds)
    reported = False
    while time.monotonic() < end:
        time.sleep(0.1)
        if os.getppid() != parent and not reported:
            # The founding bug: the runner is gone and this interpreter runs on, reparented.
            with open(orphan_log, "a") as log:
                log.write(f"{task_id} pid={os.getpid()} ppid={os.getppid()} (was {parent})\n")
            reported = True
    print(f"task {task_id}: child done", flush=True)
    return 0


def task_runner(task_id: str, seconds: str, orphan_log: str, heartbeat: str) -> int:
    """Airflow's task runner, reduced: start the task's interpreter, and heartbeat to the
    worker every ``heartbeat`` seconds until it ends: a request frame on the pidring channel
    (a 4-byte big-endian length, then the payload), then wait for the worker's answer."""
    import socket
    import struct
    import subprocess

    fds = os.environ["PIDRING_CHANNEL_FDS"].split(",")
    worker = socket.socket(fileno=int(fds[0]))

    def request(payload: bytes) -> bytes:
        worker.sendall(struct.pack(">I", len(payload)) + payload)
        reply = b""
        while len(reply) < 4 or len(reply) < 4 + struct.unpack(">I", reply[:4])[0]:
            part = worker.recv(4096)
            if not part:
                raise EOFError("the worker closed the channel")
            reply += part
        return reply[4:]

    print(f"task {task_id}: runner {os.getpid()} starting the child interpreter", flush=True)
    child = subprocess.Popen(
        [sys.executable, "-S", os.path.abspath(__file__), "task-child", task_id, seconds, orphan_log]
    )
    while True:
        try:
            return child.wait(timeout=float(heartbeat))
        except subprocess.TimeoutExpired:
            request(b"heartbeat")  # on a 409 the worker ends this tree instead of answering


# --- the execution API ----------------------------------------------------------------------


class ExecutionAPI:
    """Task instances and their states, served on 127.0.0.1 by a ThreadingHTTPServer.

    ``POST /execution/task-instances/claim`` -> 200 ``{"id", "seconds"}`` or 204 when none is queued
    ``PUT /execution/task-instances/<id>/heartbeat`` -> 204 while running, 409 otherwise
    ``PATCH /execution/task-instances/<id>/state`` ``{"state"}`` -> 204, 409 if not running
    ``POST /admin/fail`` ``{"count"}`` -> 200 ``{"failed": [ids]}`` (running tasks marked failed)
    """

    def __init__(self, tasks: int, task_seconds: float):
        import collections
        import threading
        from http.server import ThreadingHTTPServer

        self.lock = threading.Lock()
        self.states = {i: "queued" for i in range(1, tasks + 1)}
        self.seconds = task_seconds
        self.queue = collections.deque(self.states)
        self.heartbeats = 0
        self.conflicts = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="execution-api", daemon=True)

    @property
    def address(self):
        return self.server.server_address[:2]

    def __enter__(self) -> "ExecutionAPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def count(self, state: str) -> int:
        with self.lock:
            return sum(1 for s in self.states.values() if s == state)

    # Request handlers: (status, body or None).
    def claim(self, _body):
        with self.lock:
            if not self.queue:
                return 204, None
            ti = self.queue.popleft()
            self.states[ti] = "running"
            return 200, {"id": ti, "seconds": self.seconds}

    def heartbeat(self, ti: int, _body):
        with self.lock:
            self.heartbeats += 1
            state = self.states.get(ti)
            if state is None:
                return 404, {"detail": "no such task instance"}
            if state != "running":
                self.conflicts += 1
                return 409, {"detail": f"task instance is {state}, not running"}
            return 204, None

    def set_state(self, ti: int, body):
        with self.lock:
            if self.states.get(ti) != "running":
                return 409, {"detail": f"task instance is {self.states.get(ti)}"}
            self.states[ti] = body["state"]
            return 204, None

    def fail_running(self, body):
        with self.lock:
            running = [ti for ti, s in self.states.items() if s == "running"]
            chosen = running[:: max(1, len(running) // body["count"])][: body["count"]]
            for ti in chosen:
                self.states[ti] = "failed"
            return 200, {"failed": chosen}


def _handler_class(api: ExecutionAPI):
    import json
    import re
    from http.server import BaseHTTPRequestHandler

    ti_path = re.compile(r"^/execution/task-instances/(\d+)/(heartbeat|state)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the worker holds one connection

        def _dispatch(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            m = ti_path.match(self.path)
            if self.command == "POST" and self.path == "/execution/task-instances/claim":
                status, reply = api.claim(body)
            elif m and self.command == "PUT" and m.group(2) == "heartbeat":
                status, reply = api.heartbeat(int(m.group(1)), body)
            elif m and self.command == "PATCH" and m.group(2) == "state":
                status, reply = api.set_state(int(m.group(1)), body)
            elif self.command == "POST" and self.path == "/admin/fail":
                status, reply = api.fail_running(body)
            else:
                status, reply = 404, {"detail": "not found"}
            data = json.dumps(reply).encode() if reply is not None else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            if data:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _dispatch

        def log_message(self, *args):  # quiet
            pass

    return Handler


class APIClient:
    """One keep-alive HTTP/1.1 connection to the execution API."""

    def __init__(self, address):
        import http.client

        self.conn = http.client.HTTPConnection(*address, timeout=30)

    def call(self, method: str, path: str, body=None):
        import json

        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)

    def close(self) -> None:
        self.conn.close()


# --- the worker -----------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RunningTask:
    __slots__ = ("ti", "task", "terminated_at", "output_bytes", "last_line")

    def __init__(self, ti: int, task):
        self.ti = ti
        self.task = task
        self.terminated_at = None
        self.output_bytes = 0
        self.last_line = b""


class Worker:
    """Claims task instances, runs each as a task runner in ``pool``, forwards the runners'
    heartbeats (framed channel messages) to the API and answers them, terminates the tree of any task the API no longer considers running, and reports
    each task's final state. Everything in one thread of one process."""

    def __init__(self, pool, api_address, *, concurrency: int, heartbeat: float, grace: float,
                 orphan_log: str, tag: str, runner_only: bool = False):
        self.pool = pool
        self.runner_only = runner_only
        self.api = APIClient(api_address)
        self.concurrency = concurrency
        self.heartbeat_interval = heartbeat
        self.grace = grace
        self.orphan_log = orphan_log
        self.tag = tag
        self.running = {}  # Task.id -> RunningTask
        self.queue_empty = False
        # Results, for the report.
        self.succeeded = []
        self.failed_by_api = {}  # ti -> (seconds from terminate() to Done, outcome)
        self.failed_after_exit = []  # failed by the API when it had already ended
        self.other_failures = []  # (ti, outcome)
        self.peak_running = 0
        self.rss_baseline = rss_bytes()
        self.rss_at_peak = self.rss_baseline

    def run(self) -> None:
        while True:
            self._claim()
            if not self.running and self.queue_empty:
                break
            for event in self.pool.events(timeout=self.heartbeat_interval):
                self._handle(event)
                if not self.running or (not self.queue_empty and len(self.running) < self.concurrency):
                    break  # all done, or room to claim more
        self.api.close()

    def _claim(self) -> None:
        while not self.queue_empty and len(self.running) < self.concurrency:
            status, ti = self.api.call("POST", "/execution/task-instances/claim")
            if status == 204:
                self.queue_empty = True
                return
            task = self.pool.spawn(
                [sys.executable, os.path.abspath(__file__), "task-runner", str(ti["id"]),
                 str(ti["seconds"]), self.orphan_log, str(self.heartbeat_interval)],
                grace=self.grace,
                channels=1,  # the runner's heartbeats
                extra_env={"AIRFLOW_LIKE_TAG": self.tag},
            )
            self.running[task.id] = RunningTask(ti["id"], task)
        if len(self.running) >= self.peak_running:
            self.peak_running = len(self.running)
            self.rss_at_peak = max(self.rss_at_peak, rss_bytes())

    def _heartbeat(self, record: RunningTask, channel: int) -> None:
        """Forwards a runner's heartbeat to the API and answers the runner, or, on a 409,
        ends the task's tree (the runner waits for an answer that never comes)."""
        import pidring

        if record.terminated_at is not None:
            return
        status, _ = self.api.call("PUT", f"/execution/task-instances/{record.ti}/heartbeat")
        if status == 409:
            if self.runner_only:
                # Airflow 3.2's bug, for comparison: only the runner gets the signal.
                record.task.signal(signal.SIGKILL)
            else:
                # The API says this task is no longer running: end its whole tree.
                record.task.terminate()
            record.terminated_at = time.monotonic()
        else:
            try:
                record.task.send(channel, b"ok")
            except pidring.StreamClosedError:
                pass  # the runner is gone meanwhile: its Done follows
        if len(self.running) >= self.peak_running:
            self.rss_at_peak = max(self.rss_at_peak, rss_bytes())

    def _handle(self, event) -> None:
        import pidring

        record = self.running.get(event.task)
        if record is None:
            return
        if isinstance(event, pidring.Message):
            self._heartbeat(record, event.channel)
        elif isinstance(event, pidring.Output):
            record.output_bytes += len(event.data)
            record.last_line = event.data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        elif isinstance(event, pidring.Done):
            del self.running[event.task]
            outcome = event.outcome
            if record.terminated_at is not None:
                self.failed_by_api[record.ti] = (time.monotonic() - record.terminated_at, outcome)
            elif outcome.ok:
                status, _ = self.api.call("PATCH", f"/execution/task-instances/{record.ti}/state",
                                          {"state": "success"})
                if status == 409:
                    # Failed by the API while it was finishing, before its next heartbeat.
                    self.failed_after_exit.append(record.ti)
                else:
                    self.succeeded.append(record.ti)
            else:
                self.api.call("PATCH", f"/execution/task-instances/{record.ti}/state", {"state": "failed"})
                self.other_failures.append((record.ti, outcome))


# --- the scenario ---------------------------------------------------------------------------


FATAL = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGKILL - 1))


def fatal_signal_pending(pid: int) -> bool:
    """Whether SIGTERM or SIGKILL is pending for ``pid`` (it is dying: it runs no more of
    its own code). Our tasks' processes never block or ignore SIGTERM."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & FATAL:
                    return True
    except OSError:
        return True  # gone
    return False


def tagged_processes(tag: str):
    """(pid, ppid) of live processes whose environment carries AIRFLOW_LIKE_TAG=tag."""
    needle = f"AIRFLOW_LIKE_TAG={tag}".encode()
    found = []
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
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] == b"Z":
            continue
        found.append((int(entry), int(fields[1])))
    return found


class Report:
    def __init__(self):
        self.tasks = 0
        self.fail_requested = 0
        self.worker_error = None
        self.succeeded = 0
        self.failed_ids = []
        self.terminated = {}
        self.failed_after_exit = []
        self.other_failures = []
        self.grace = 0.0
        self.orphans_logged = []
        self.orphans_seen = []
        self.orphans_dying = []
        self.survivors = []
        self.peak_running = 0
        self.rss_baseline = 0
        self.rss_at_peak = 0
        self.containment = ""
        self.api_states = {}
        self.wall = 0.0

    @property
    def rss_per_running_task(self) -> float:
        return (self.rss_at_peak - self.rss_baseline) / max(1, self.peak_running)

    def problems(self):
        p = []
        if self.worker_error is not None:
            p.append(f"the worker raised: {self.worker_error!r}")
        if len(self.failed_ids) != self.fail_requested:
            p.append(f"the admin call failed {len(self.failed_ids)} tasks, not {self.fail_requested}")
        if sorted([*self.terminated, *self.failed_after_exit]) != sorted(self.failed_ids):
            p.append(f"terminated {sorted(self.terminated)} (and {sorted(self.failed_after_exit)} had ended) "
                     f"but the API failed {sorted(self.failed_ids)}")
        for ti, (seconds, outcome) in self.terminated.items():
            if not seconds < self.grace:
                p.append(f"task {ti}: tree gone {seconds:.2f} s after terminate, grace is {self.grace} s")
            if outcome.reason != "terminated":
                p.append(f"task {ti}: ended {outcome!r}, not terminated")
            elif self.containment == "cgroup" and outcome.descendants_killed < 1:
                p.append(f"task {ti}: its child interpreter was not running when the tree was ended")
        if self.succeeded != self.tasks - self.fail_requested:
            p.append(f"{self.succeeded} tasks succeeded, not {self.tasks - self.fail_requested}")
        if self.other_failures:
            p.append(f"unexpected failures: {self.other_failures[:3]!r}")
        if self.orphans_logged:
            p.append(f"child interpreters saw their parent change: {self.orphans_logged[:3]}")
        if self.orphans_seen:
            p.append(f"tagged processes with ppid 1 seen: {self.orphans_seen[:3]}")
        if self.survivors:
            p.append(f"processes left after the run: {self.survivors}")
        return p

    def summary(self) -> str:
        mib = 1024 * 1024
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.api_states.items()))
        slowest = max((s for s, _ in self.terminated.values()), default=0.0)
        return "\n".join([
            f"tasks: {self.tasks} ({self.peak_running} running at once), containment {self.containment}, {self.wall:.1f} s",
            f"API states: {states}",
            f"failed by the admin call: {len(self.failed_ids)}; {len(self.terminated)} terminated on their 409, "
            f"trees gone in at most {slowest:.3f} s (grace {self.grace:.0f} s); "
            f"{len(self.failed_after_exit)} had just ended on their own",
            f"orphans: {len(self.orphans_logged)} seen by the children, {len(self.orphans_seen)} with ppid 1 in /proc "
            f"({len(self.orphans_dying)} more caught dying, SIGTERM pending); "
            f"survivors after the run: {len(self.survivors)}",
            f"worker RSS: {self.rss_baseline / mib:.1f} MiB before the first task, {self.rss_at_peak / mib:.1f} MiB "
            f"with {self.peak_running} running: {self.rss_per_running_task / 1024:.1f} KiB per running task",
            "worker raised: " + ("no" if self.worker_error is None else repr(self.worker_error)),
        ])


def run_scenario(tasks: int = 200, fail: int = 20, task_seconds: float = 20.0, heartbeat: float = 1.0,
                 grace: float = 10.0, containment: str = "auto", concurrency=None,
                 runner_only: bool = False) -> Report:
    """Runs the whole scenario and returns its report (see ``Report.problems``)."""
    import tempfile
    import threading
    import uuid

    import pidring

    report = Report()
    report.tasks, report.fail_requested, report.grace = tasks, fail, grace
    tag = uuid.uuid4().hex
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        orphan_log = os.path.join(tmp, "orphans.log")
        stop_monitor = threading.Event()

        def monitor():
            # Any tagged process whose parent is PID 1 is an orphan of a task tree.
            while not stop_monitor.wait(0.2):
                for pid, ppid in tagged_processes(tag):
                    if ppid == 1:
                        # Caught between its parent's death and its own (SIGTERM pending):
                        # dying, not running on.
                        dying = fatal_signal_pending(pid)
                        (report.orphans_dying if dying else report.orphans_seen).append((pid, ppid))

        def admin(api: ExecutionAPI):
            # Mid-run: once every task instance was handed out and each running one has its
            # child interpreter up (two tagged processes: runner and child), fail some.
            while True:
                running = api.count("running")
                if not api.queue and running >= fail and len(tagged_processes(tag)) >= 2 * running:
                    break
                if stop_monitor.wait(0.1):
                    return
            client = APIClient(api.address)
            _, reply = client.call("POST", "/admin/fail", {"count": fail})
            client.close()
            report.failed_ids = reply["failed"]

        with ExecutionAPI(tasks, task_seconds) as api, pidring.Pool(containment=containment) as pool:
            report.containment = pool.containment
            threads = [threading.Thread(target=monitor, daemon=True),
                       threading.Thread(target=admin, args=(api,), daemon=True)]
            for t in threads:
                t.start()
            worker = Worker(pool, api.address, concurrency=concurrency or tasks, heartbeat=heartbeat,
                            grace=grace, orphan_log=orphan_log, tag=tag, runner_only=runner_only)
            try:
                worker.run()
            except Exception as e:  # the report says so; the check is that this never happens
                report.worker_error = e
            stop_monitor.set()
            for t in threads:
                t.join()
            report.api_states = {s: api.count(s) for s in ("queued", "running", "success", "failed")}
        report.survivors = tagged_processes(tag)
        report.succeeded = len(worker.succeeded)
        report.terminated = worker.failed_by_api
        report.failed_after_exit = worker.failed_after_exit
        report.other_failures = worker.other_failures
        report.peak_running = worker.peak_running
        report.rss_baseline, report.rss_at_peak = worker.rss_baseline, worker.rss_at_peak
        if os.path.exists(orphan_log):
            with open(orphan_log) as log:
                report.orphans_logged = log.read().splitlines()
    report.wall = time.monotonic() - started
    return report


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--fail", type=int, default=20, help="running tasks the admin call marks failed")
    parser.add_argument("--task-seconds", type=float, default=20.0, help="how long each task's child loops")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--containment", default="auto", choices=["auto", "cgroup", "process-group"])
    parser.add_argument("--runner-only", action="store_true",
                        help="reproduce Airflow 3.2's bug: on a 409, SIGKILL only the task runner "
                             "(its child is orphaned until pidring's drain ends the tree; the checks fail)")
    args = parser.parse_args(argv)
    report = run_scenario(tasks=args.tasks, fail=args.fail, task_seconds=args.task_seconds,
                          heartbeat=args.heartbeat, grace=args.grace, containment=args.containment,
                          runner_only=args.runner_only)
    print(report.summary())
    problems = report.problems()
    for problem in problems:
        print("FAIL:", problem)
    print("all checks passed" if not problems else f"{len(problems)} check(s) failed")
    return 0 if not problems else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "task-runner":
        sys.exit(task_runner(*sys.argv[2:6]))
    if len(sys.argv) > 1 and sys.argv[1] == "task-child":
        sys.exit(task_child(*sys.argv[2:5]))
    sys.exit(main())
