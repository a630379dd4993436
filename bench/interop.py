"""The Eclipse Paho interoperability suites of eclipse/paho.mqtt.testing, MQTT 3.1.1
(`client_test.py`) and MQTT 5 (`client_test5.py`), against greenfly, Debian's Mosquitto and a
greenfly cluster (three nodes on Redis behind nginx); prints pass/fail per test.

Why a script and not a test: the suite is someone else's code (EPL/EDL), so it is never copied
into this repo; it is extracted from a local snapshot of its git repository into a temporary
directory, run there as its README says (`python3 client_test5.py`, the port with `-p`), and
thrown away. Each broker is started here on a free loopback port with what the suite assumes:
- `max_keepalive = 60`: test_server_keep_alive connects with keepalive 120 and wants a server
  keep alive of 60 in CONNACK;
- an ACL that lets anonymous clients read and write everything except subscribing to
  `test/nosubscribe` (test_subscribe_failure wants that subscription refused);
- `reveal_denials = false`: test_subscribe_failure accepts only 0x80 for that refusal (a
  3.1.1 habit); greenfly's default, 0x87 not authorized, says more and fails it, as Mosquitto
  does (`--reveal-denials` runs with the default);
- a fresh data directory, nothing retained from earlier runs.

`client_test.py` hands its whole command line to unittest, which refuses its `-p`: it is run
through a few lines of ours (`RUN311`) that give it the port and unittest the test names.
`greenfly-cluster` (bench/interop_cluster.py) is three nodes with the single-node settings and
a `[cluster]` section, behind `greenfly deploy nginx-stream --upstream`; the suite talks to
nginx, and the report says on which node each of its clients landed. `greenfly-nginx` is one
plain greenfly behind the same nginx, to tell nginx's effects from the cluster's.

    .venv/bin/python bench/interop.py                       # both suites, greenfly and mosquitto
    .venv/bin/python bench/interop.py --brokers greenfly-cluster --suites 3.1.1
    .venv/bin/python bench/interop.py --brokers greenfly --each   # one process per test
    .venv/bin/python bench/interop.py --suites 5 --tests test_will_delay,test_flow_control2

`--each` runs every test in its own process (the suite's class setup cleans up before each):
slower, but one test's leftovers or hang cannot touch the next. The exit status is 0 when
every greenfly kind passed everything it ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from brokers import MOSQUITTO
from interop_cluster import ClusterBroker
from procs import REPO, free_port, kill_everything, port_accepts, reap, register, terminate

SNAPSHOT = Path("/work/.mirror/eclipse+paho.mqtt.testing/repo")  # a bare git directory
NO_REASON = "(no exception line; see the log)"
STALL_TIMEOUT = 90.0  # seconds one test may run (the longest sleep about 15 s in total)
START_TIMEOUT = 30.0

# Anonymous clients (the suite sends no user name) may do anything but subscribe to the
# suite's forbidden filter. The same text is a valid greenfly and Mosquitto ACL file.
ACL = "topic readwrite #\ntopic deny test/nosubscribe\n"

# 3.1.1's suite names one test testBasic.
_STARTED = re.compile(r"^(test\w+) \(__main__\.Test[\w.]*\)", re.M)
_FAILED = re.compile(r"^(FAIL|ERROR): (test\w+) ", re.M)
_VERDICT = re.compile(r"(?:\.\.\. |^)(ok|FAIL|ERROR)$", re.M)
_ERROR_LINE = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception|Timeout|timeout)\b.*$", re.M)


@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # test -> why, in a line
    unfinished: list[str] = field(default_factory=list)
    seconds: float = 0.0
    landed: dict[str, list[str]] = field(default_factory=dict)  # cluster: node -> client ids


SUITES = {"3.1.1": "client_test.py", "5": "client_test5.py"}
BROKER_KINDS = ("greenfly", "mosquitto", "greenfly-cluster", "greenfly-nginx")

# Runs client_test.py as its own __main__ with `--hostname=127.0.0.1 -p PORT` (what its getopt
# reads; not `-h`, which its `o in ("--help")`, a substring test, takes for help), while
# unittest gets `-v` and the test names instead of that command line.
RUN311 = """import runpy, sys, unittest
script, port, *tests = sys.argv[1:]
_main = unittest.main
unittest.main = lambda *args, **kwargs: _main(*args, argv=[script, "-v", *tests], **kwargs)
sys.argv = [script, "--hostname=127.0.0.1", "-p", port]
runpy.run_path(script, run_name="__main__")
"""


def extract_suite(snapshot: Path, into: Path) -> Path:
    """`git archive` the interoperability folder of the snapshot's HEAD into `into`."""
    archive = subprocess.run(["git", "--git-dir", str(snapshot), "archive", "HEAD",
                              "interoperability"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    suite = into / "interoperability"
    for script in SUITES.values():
        if not (suite / script).exists():
            raise SystemExit(f"{snapshot}: no interoperability/{script} at HEAD")
    (suite / "run311.py").write_text(RUN311)
    return suite


def test_names(suite: Path, script: str = "client_test5.py") -> list[str]:
    text = (suite / script).read_text()
    return re.findall(r"^    def (test\w+)\(self\)", text, re.M)


def greenfly_config(home: Path, port: int, reveal_denials: bool = False) -> str:
    """One greenfly (or cluster node) as the suite wants it, listening on `port`."""
    acl = home / "acl"
    acl.write_text(ACL)
    data = home / "data"
    data.mkdir()
    return (f'[broker]\ndata_dir = "{data}"\nallow_anonymous = true\nacl_file = "{acl}"\n'
            f"reveal_denials = {str(reveal_denials).lower()}\n\n"
            "[limits]\nmax_keepalive = 60\n\n"
            f'[[listener]]\nbind = "127.0.0.1"\nport = {port}\nprotocol = "mqtt"\n')


class SuiteBroker:
    """greenfly or Mosquitto on a free loopback port, configured for the suite."""

    def __init__(self, kind: str, workdir: Path, reveal_denials: bool = False) -> None:
        self.kind = kind
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.port = free_port()
        self.log_path = workdir / f"{kind}.log"
        if kind == "greenfly":
            self.config = workdir / "greenfly.toml"
            self.config.write_text(greenfly_config(workdir, self.port, reveal_denials))
            python = REPO / ".venv" / "bin" / "python"
            self.command = [str(python if python.exists() else sys.executable), "-m",
                            "broker", "-c", str(self.config)]
        else:
            acl = workdir / "acl"
            acl.write_text(ACL)
            self.config = workdir / "mosquitto.conf"
            self.config.write_text(
                "user root\nallow_anonymous true\nmax_keepalive 60\npersistence false\n"
                f"acl_file {acl}\nlog_dest stderr\nlog_type error\nlog_type warning\n"
                f"listener {self.port} 127.0.0.1\n")
            self.command = [str(MOSQUITTO), "-c", str(self.config)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> SuiteBroker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = register(subprocess.Popen(self.command, cwd=REPO, stdout=log,
                                              stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not port_accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{self.kind} did not start:\n{self.log_path.read_text()}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        terminate(proc)


def run_suite(suite: Path, port: int, tests: list[str], log: Path,
              script: str = "client_test5.py") -> tuple[str, bool]:
    """One suite process (verbose, so it names each test as it starts); its output, and
    whether it was stopped because one test ran past STALL_TIMEOUT (some of the suite's
    loops wait for a packet forever)."""
    names = [f"Test.{name}" for name in tests]
    command = ([sys.executable, script, "-p", str(port), "-v", *names]
               if script == "client_test5.py"
               else [sys.executable, "run311.py", script, str(port), *names])
    out_path = log.with_suffix(".current")
    with out_path.open("w") as out_file:
        proc = register(subprocess.Popen(command, cwd=suite, stdout=out_file,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    stalled = False
    last_start, since = 0, time.monotonic()
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            starts = len(_STARTED.findall(out_path.read_text(errors="replace")))
            if starts != last_start:
                last_start, since = starts, time.monotonic()
            elif time.monotonic() - since > STALL_TIMEOUT:
                stalled = True
                proc.kill()
                proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        reap(proc)
    out = out_path.read_text(errors="replace")
    out_path.unlink()
    with log.open("a") as f:
        f.write(f"$ {' '.join(command)}\n{out}\n")
    return out, stalled


def why(segment: str) -> str:
    """The most telling line of a failed test's output: its last exception line."""
    lines = _ERROR_LINE.findall(segment)
    return lines[-1].strip()[:300] if lines else NO_REASON


def parse(out: str, asked: list[str], stalled: bool) -> Outcome:
    """Each test's verdict from unittest's verbose words (`... ok`, `FAIL`, `ERROR`), its
    reason from the failure summary or, for a test that caught its error and printed it
    before asserting, from what it printed."""
    outcome = Outcome()
    starts = list(_STARTED.finditer(out))
    summary_at = out.find("\n" + "=" * 70)
    if summary_at < 0:
        summary_at = len(out)
    segments = {}
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else summary_at
        segments[match.group(1)] = out[match.start():end]
    blocks = {m.group(2): out[m.start():].split("\n" + "=" * 70, 1)[0]
              for m in _FAILED.finditer(out)}
    for name in asked:
        segment = segments.get(name)
        if segment is None:
            outcome.unfinished.append(name)
            continue
        verdicts = _VERDICT.findall(segment)
        if verdicts and verdicts[-1] == "ok":
            outcome.passed.append(name)
            continue
        if not verdicts:
            outcome.failed[name] = (f"hung: no verdict within {STALL_TIMEOUT:.0f} s, stopped"
                                    if stalled else "no verdict (the suite died?)")
            continue
        reason = why(blocks.get(name, segment))
        # What the test printed before its verdict (an error it caught, or one in the
        # suite's receiver thread) often says more than the assertion that followed.
        printed = list(dict.fromkeys(line.strip()[:200] for line in _ERROR_LINE.findall(segment)
                                     if line.strip()[:200] != reason[:200]))
        if reason.endswith("False != True") and printed:
            reason = " <- ".join(reversed(printed))
        elif printed:
            reason += f" (printed before: {' <- '.join(reversed(printed))})"
        outcome.failed[name] = reason
    return outcome


def start_broker(kind: str, workdir: Path, reveal_denials: bool) -> SuiteBroker | ClusterBroker:
    if kind in ("greenfly-cluster", "greenfly-nginx"):
        return ClusterBroker(workdir, lambda home, port: greenfly_config(home, port,
                                                                         reveal_denials),
                             cluster=kind == "greenfly-cluster").start()
    return SuiteBroker(kind, workdir, reveal_denials).start()


def run_against(kind: str, suite: Path, tests: list[str], each: bool, workdir: Path,
                reveal_denials: bool = False, script: str = "client_test5.py") -> Outcome:
    broker = start_broker(kind, workdir / kind, reveal_denials)
    log = workdir / f"{kind}-suite.log"
    began = time.monotonic()
    try:
        outcome = Outcome()
        if not each:
            # One process for the lot; after a hung test, a new one for the tests after it.
            remaining = tests
            while remaining:
                out, stalled = run_suite(suite, broker.port, remaining, log, script)
                one = parse(out, remaining, stalled)
                outcome.passed += one.passed
                outcome.failed.update(one.failed)
                remaining = one.unfinished if stalled else []
                if not stalled:
                    outcome.unfinished += one.unfinished
            # A run stopped after a hang printed no failure summary for the tests before it:
            # run those alone once more, for a reason (the verdict stays the whole run's).
            for name, reason in list(outcome.failed.items()):
                if reason == NO_REASON:
                    out, stalled = run_suite(suite, broker.port, [name], log, script)
                    alone = parse(out, [name], stalled).failed.get(name)
                    outcome.failed[name] = (f"{alone} (when run alone)" if alone
                                            else "passes when run alone: an earlier test's "
                                            "leftovers?")
        else:
            for name in tests:
                out, stalled = run_suite(suite, broker.port, [name], log, script)
                one = parse(out, [name], stalled)
                outcome.passed += one.passed
                outcome.failed.update(one.failed)
                outcome.unfinished += one.unfinished
                print(f"  {kind} {name}: {'ok' if one.passed else 'FAIL'}", flush=True)
    finally:
        broker.stop()
    outcome.seconds = time.monotonic() - began
    if isinstance(broker, ClusterBroker):
        outcome.landed = broker.landed()
    with contextlib.suppress(OSError):
        issues = [line for line in broker.log_path.read_text(errors="replace").splitlines()
                  if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
        if issues:
            print(f"  {kind} log: {len(issues)} warning/error lines, e.g. {issues[0][:160]}")
    return outcome


def report(title: str, outcome: Outcome, total: int) -> None:
    print(f"\n{title}: {len(outcome.passed)} of {total} passed "
          f"({outcome.seconds:.0f} s)")
    for name, reason in sorted(outcome.failed.items()):
        print(f"  FAIL {name}: {reason}")
    for name in outcome.unfinished:
        print(f"  NOT RUN {name}")
    if outcome.landed:
        clients = sorted({c for ids in outcome.landed.values() for c in ids})
        print(f"  {len(clients)} client ids landed on "
              + ", ".join(f"{node}: {len(ids)} connections ({len(set(ids))} ids)"
                          for node, ids in outcome.landed.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="greenfly,mosquitto",
                        help=f"comma-separated, of {', '.join(BROKER_KINDS)}")
    parser.add_argument("--suites", default="3.1.1,5", help="3.1.1, 5 or both")
    parser.add_argument("--tests", default="", help="comma-separated test names (default all)")
    parser.add_argument("--each", action="store_true", help="one process per test")
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT,
                        help="bare git directory of eclipse/paho.mqtt.testing")
    parser.add_argument("--reveal-denials", action="store_true",
                        help="greenfly's default reveal_denials = true (0x87 in SUBACK)")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, configs) and print it")
    args = parser.parse_args()
    kinds = [k for k in args.brokers.split(",") if k]
    suites = [v for v in args.suites.split(",") if v]
    if set(kinds) - set(BROKER_KINDS) or set(suites) - set(SUITES) or not kinds or not suites:
        raise SystemExit(f"--brokers: of {', '.join(BROKER_KINDS)}; "
                         f"--suites: of {', '.join(SUITES)}")
    status = 0
    tmp = Path(tempfile.mkdtemp(prefix="greenfly-interop-"))
    try:
        suite = extract_suite(args.snapshot, tmp)
        asked = [t for t in args.tests.split(",") if t]
        names = {version: test_names(suite, SUITES[version]) for version in suites}
        unknown = set(asked) - {t for tests in names.values() for t in tests}
        if unknown:
            raise SystemExit(f"no such tests: {', '.join(sorted(unknown))}")
        commit = subprocess.run(["git", "--git-dir", str(args.snapshot), "log", "-1",
                                 "--format=%h %cs"], capture_output=True, text=True).stdout
        results: dict[tuple[str, str], tuple[Outcome, int]] = {}
        for version in suites:
            tests = [t for t in names[version] if not asked or t in asked]
            if not tests:
                continue
            script = SUITES[version]
            print(f"paho.mqtt.testing {commit.strip()}: {script} (MQTT {version}), "
                  f"{len(tests)} tests")
            for kind in kinds:
                print(f"running against {kind} ...", flush=True)
                results[(version, kind)] = (run_against(
                    kind, suite, tests, args.each, tmp / f"v{version}", args.reveal_denials,
                    script), len(tests))
        for (version, kind), (outcome, total) in results.items():
            report(f"MQTT {version} suite, {kind}", outcome, total)
            if kind.startswith("greenfly") and (outcome.failed or outcome.unfinished):
                status = 1
        if args.json:
            args.json.write_text(json.dumps(
                [{"suite": version, "broker": kind, "total": total, **asdict(outcome)}
                 for (version, kind), (outcome, total) in results.items()], indent=1))
    finally:
        kill_everything()
        if args.keep:
            print(f"\nlogs and configs kept in {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
