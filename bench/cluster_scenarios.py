"""Cluster scenarios (issue 16): the same flows through one node, one node with a `[cluster]`
table, and two nodes on one redis-server; durable QoS 1 on Redis against the file journal.

It exists to say what the cost per message of the cluster path is, Redis included: every run
reports the rate, and the CPU of each node and of redis-server over the load generator's
measured window (`--cpu-pids`), so the cost per message is summed over every process that
served it. bench/cluster_run.py is the command line. redis-server is Debian's, started fresh
per run with what the cluster documents (AOF, `appendfsync always`), pinned with the nodes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from brokers import Broker, BrokerOptions
from procs import BROKER_CPU, REPO, free_port, proc_cpu, register, terminate
from scenarios import Context, Run, flow_metrics, timing

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class Redis:
    """One redis-server on a free loopback port, AOF fsynced on every write, stopped by PID."""

    def __init__(self, workdir: Path, pin: bool) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir, self.port, self.pin = workdir, free_port(), pin
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> Redis:
        cmd = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
               "--appendonly", "yes", "--appendfsync", "always", "--save", "",
               "--dir", str(self.dir), "--daemonize", "no",
               "--logfile", str(self.dir / "redis.log")]
        if self.pin:
            cmd = ["taskset", "-c", str(BROKER_CPU), *cmd]
        self.proc = register(subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        while not self.command(b"PING").startswith(b"+PONG"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING on {self.port}")
            time.sleep(0.01)
        return self

    def command(self, line: bytes) -> bytes:
        """One inline command's whole reply (b"" when nothing answers)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
                sock.sendall(line + b"\r\n")
                reply = sock.recv(65536)
                if reply.startswith(b"$"):  # a bulk string: read up to its announced length
                    size = int(reply[1:reply.index(b"\r\n")])
                    while len(reply) < size + len(str(size)) + 5:
                        more = sock.recv(65536)
                        if not more:
                            break
                        reply += more
                return reply
        except OSError:
            return b""

    def command_stats(self) -> dict[str, tuple[int, int]]:
        """Per command: (calls, microseconds) from INFO commandstats."""
        stats = {}
        for line in self.command(b"INFO commandstats").decode(errors="replace").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(kv.split("=", 1) for kv in rest.split(","))
                stats[name[8:]] = (int(fields["calls"]), int(fields["usec"]))
        return stats

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        terminate(proc)


@dataclass
class Layout:
    """Where the clients go: `nodes` 0 is a plain single node (no [cluster] table); `pubs`
    and `subs` are the node numbers (1-based) the load generator's publishers and
    subscribers connect to in turn."""
    variant: str
    nodes: int
    pubs: tuple[int, ...] = (1,)
    subs: tuple[int, ...] = (1,)
    fsync: str = "never"


@dataclass
class ClusterScenario:
    name: str
    title: str
    loadgen_args: list[str]
    layouts: list[Layout]
    lead: bool = True    # QoS 0: publishers at most --max-lead ahead of the slowest subscriber


def cluster_scenarios() -> list[ClusterScenario]:
    return [
        ClusterScenario(
            "cl_fanout_qos0", "QoS 0 fan-out, 1 publisher on node 1 -> 100 subscribers",
            ["--pubs", "1", "--subs", "100", "--qos", "0"],
            [Layout("single", 0), Layout("cluster1", 1), Layout("cluster2", 2, (1,), (1, 2))]),
        ClusterScenario(
            "cl_fanin_qos1", "QoS 1 fan-in, 10 publishers x window 100 -> 1 subscriber on node 1",
            ["--pubs", "10", "--subs", "1", "--qos", "1", "--window", "100"],
            [Layout("single", 0), Layout("cluster1", 1), Layout("cluster2", 2, (1, 2), (1,))],
            lead=False),
        ClusterScenario(
            "cl_durable", "durable QoS 1 fan-in 10 x 100 -> persistent subscriber on node 1",
            ["--pubs", "10", "--subs", "1", "--qos", "1", "--window", "100", "--sub-clean", "0"],
            [Layout("journal", 0, fsync="always"), Layout("redis1", 1),
             Layout("redis2", 2, (1, 2), (1,))],
            lead=False),
    ]


def cluster_table(redis: Redis, node_id: str) -> str:
    return (f'\n[cluster]\nnode_id = "{node_id}"\nredis_url = "{redis.url}"\n'
            'key_prefix = "gfbench:"\nlease_ms = 10000\n')


def ports_arg(flag: str, nodes: list[Broker], which: tuple[int, ...]) -> list[str]:
    return [flag, ",".join(str(nodes[i - 1].tcp_port) for i in which)]


def run_layout(ctx: Context, scenario: ClusterScenario, layout: Layout, rep: int) -> Run:
    result = Run(scenario.name, "greenfly", rep, layout.variant)
    tag = f"{ctx.count + 1:03d}-{scenario.name}-{layout.variant}"
    ctx.count += 1
    redis = Redis(ctx.workroot / tag / "redis", ctx.pin) if layout.nodes else None
    nodes: list[Broker] = []
    try:
        if redis is not None:
            redis.start()
        for i in range(1, max(layout.nodes, 1) + 1):
            extra = cluster_table(redis, f"n{i}") if redis is not None else ""
            nodes.append(Broker("greenfly", ctx.workroot / tag / f"n{i}",
                                BrokerOptions(fsync=layout.fsync, extra=extra),
                                ctx.pin, ctx.args.nice).start())
        pids = [n.pid for n in nodes] + ([redis.pid] if redis is not None else [])
        args = ["--port", str(nodes[0].tcp_port), *ports_arg("--pub-ports", nodes, layout.pubs),
                *ports_arg("--sub-ports", nodes, layout.subs), *timing(ctx.args),
                *scenario.loadgen_args, "--cpu-pids", ",".join(map(str, pids))]
        if scenario.lead:
            args += ["--max-lead", str(ctx.args.max_lead)]
        before = redis.command_stats() if redis is not None else {}
        others0, t0 = sum(proc_cpu(p) for p in pids[1:]), time.monotonic()
        report = ctx.loadgen(result, nodes[0], args, timeout=ctx.args.duration * 4 + 90)
        others = sum(proc_cpu(p) for p in pids[1:]) - others0
        if result.other_cpu_pct is not None:
            # ctx.loadgen counts every process but node 1 and itself as other work: the
            # other nodes and Redis are ours (the same wall time as its own figure)
            wall = time.monotonic() - t0
            result.other_cpu_pct = max(0.0, result.other_cpu_pct - 100 * others / wall)
        result.metrics = flow_metrics(report)
        lat = report.get("lat_us") or {}
        if lat.get("n"):
            # unpaced: the time a message waits behind the publishers' window or lead, plus
            # the broker path; comparable between layouts of one scenario, not a latency goal
            result.metrics["p50"], result.metrics["p99"] = lat["p50"], lat["p99"]
        cost_metrics(result, report, [f"n{i + 1}" for i in range(len(nodes))]
                     + (["redis"] if redis is not None else []))
        if redis is not None:
            redis_metrics(result, report, before, redis.command_stats())
        for node in nodes[1:]:
            if not node.alive() and result.ok:
                result.ok, result.error = False, f"node {node.workdir.name} died"
    finally:
        ctx.finish(result, *nodes)
        if redis is not None:
            redis.stop()
    return result


def cost_metrics(result: Run, report: dict, names: list[str]) -> None:
    """µs of CPU per delivered message, per process and summed over nodes and Redis."""
    rate = report.get("rate") or 0.0
    pcts = report.get("pids_cpu_pct") or []
    if not rate or len(pcts) != len(names) or min(pcts) < 0:
        return
    for name, pct in zip(names, pcts, strict=True):
        result.metrics[f"us_{name}"] = pct / 100 / rate * 1e6
    result.metrics["us_total"] = sum(pcts) / 100 / rate * 1e6
    result.metrics["cpu_pct_total"] = sum(pcts)


def redis_metrics(result: Run, report: dict, before: dict[str, tuple[int, int]],
                  after: dict[str, tuple[int, int]]) -> None:
    """Redis commands per delivered message over the whole run (setup and drain included, so
    a little high): scripts (EVALSHA: a fenced append each) and PUBLISH (a forward or a
    notice to another node), and the µs Redis spent inside one script. INFO commandstats
    also counts the commands a script runs, so only these top-level ones are shown."""
    delta = {k: (after[k][0] - before.get(k, (0, 0))[0], after[k][1] - before.get(k, (0, 0))[1])
             for k in after}
    result.raw.append({"redis_commandstats_delta": delta})
    derive_redis(result)


def derive_redis(result: Run) -> None:
    deltas = [x["redis_commandstats_delta"] for x in result.raw
              if "redis_commandstats_delta" in x]
    delivered = next((x.get("delivered") for x in result.raw if x.get("delivered")), 0)
    if not deltas or not delivered:
        return
    delta = deltas[-1]
    scripts, script_us = delta.get("evalsha", (0, 0))
    result.metrics["redis_scripts_per_msg"] = scripts / delivered
    result.metrics["redis_publish_per_msg"] = delta.get("publish", (0, 0))[0] / delivered
    if scripts >= delivered / 100:  # not just the setup's claims and subscribes
        result.metrics["redis_us_per_script"] = script_us / scripts


def runner(scenario: ClusterScenario) -> Callable[[Context, int], list[Run]]:
    def run(ctx: Context, rep: int) -> list[Run]:
        layouts = scenario.layouts if rep % 2 else scenario.layouts[::-1]
        return [run_layout(ctx, scenario, layout, rep) for layout in layouts]
    return run
