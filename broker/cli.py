"""The `greenfly` command: run the broker, and the tools around it.

`greenfly [-c FILE]` runs the broker (the embedded default configuration without -c).
`greenfly check -c FILE` validates a configuration and says what it would listen on.
Every other subcommand lives in its own module, which registers it (`register(commands,
config_option)`) and gives it a handler `(args, config_path) -> exit code`; `TOOLS` names them.
They are imported only for a command line that may name one: running the broker loads none
of them (admin's HTTP client, probe's wsproto and ssl), which is most of a cold start's imports.
Signals while running: SIGTERM and SIGINT stop gracefully; SIGHUP re-reads the configuration
file and applies what can change live, keeping the running one if the new file is broken.
Exit codes: 0 fine, 1 cannot start (port in use, data_dir locked by another broker), 2 bad
configuration, 3 damaged journal.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import signal
import sys
from types import ModuleType

from . import __version__
from .config.loading import load_default, load_file
from .config.schema import Config
from .errors import ConfigError
from .store.dir_lock import DataDirInUse
from .store.journal_file import JournalCorrupt

log = logging.getLogger("greenfly")

# Modules under broker/tools/ that add subcommands: each has register(commands, config_option).
TOOLS = ("journal", "passwd", "deploy", "probe", "admin_commands")


def tool(name: str) -> ModuleType:
    return importlib.import_module(f".tools.{name}", __package__)


def runs_the_broker(argv: list[str]) -> bool:
    """True when `argv` can only mean running the broker: no subcommand but `run`, no help.
    Anything else (a tool, `check`, a typo argparse must answer with the list) gets the full
    parser. Options before the subcommand are `-c FILE`/`--config FILE` and `--version`."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return False
        if word in ("-c", "--config"):
            next(words, None)  # its value, which may look like a command name
        elif not word.startswith("-"):
            return word == "run" and not {"-h", "--help"} & set(words)
    return True


def build_parser(tools: bool = True) -> argparse.ArgumentParser:
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("-c", "--config", dest="sub_config",
                               help="TOML configuration file (default: the embedded one)")
    parser = argparse.ArgumentParser(prog="greenfly", description="greenfly MQTT broker")
    parser.add_argument("-c", "--config", help="TOML configuration file (default: embedded)")
    parser.add_argument("--version", action="version", version=f"greenfly {__version__}")
    parser.set_defaults(handler=lambda args, path: run(path))
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", parents=[config_option],
                        help="run the broker (the default command)")
    check = commands.add_parser("check", parents=[config_option],
                                help="validate a configuration file and exit")
    check.set_defaults(handler=lambda args, path: check_command(path, args))
    for name in TOOLS if tools else ():
        tool(name).register(commands, config_option)
    return parser


def load_config(path: str | None) -> Config:
    return load_file(path) if path else load_default()


def load_config_or_report(path: str | None) -> Config | None:
    """The configuration, or None after printing why it cannot be used."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"greenfly: configuration error: {exc}", file=sys.stderr)
        return None


def setup_logging(level: str, log_format: str = "text") -> bool:
    """Log to stderr in `log_format`; True when stderr is the systemd journal."""
    from .server.log_format import configure  # no gevent; late like the rest of the runtime

    return configure(level, log_format)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(tools=not runs_the_broker(sys.argv[1:] if argv is None else argv)
                        ).parse_args(argv)
    path = getattr(args, "sub_config", None) or args.config
    return args.handler(args, path)


def check_command(path: str | None, args: argparse.Namespace) -> int:
    config = load_config_or_report(path)
    if config is None:
        return 2
    from .config.description import describe
    from .config.exposure import exposures
    from .server.security import check_files  # late: keeps gevent out of a plain config check
    from .tools import preflight

    try:
        check_files(config)
    except ConfigError as exc:
        print(f"greenfly: configuration error: {exc}", file=sys.stderr)
        return 2
    if not args.salvage:  # salvage is there to repair what this would find
        status = preflight.startup_checks(config, path)
        if status:
            print(f"{path or 'embedded default config'}: the configuration is valid, but the "
                  "broker would not start (above)", file=sys.stderr)
            return status
    print(f"{path or 'embedded default config'}: OK")
    for line in describe(config):
        print(f"  {line}")
    for warning in exposures(config):
        print(f"greenfly check: WARNING: {warning}", file=sys.stderr)
    for name in CHECK_HOOKS:
        status = tool(name).check_hook(config, args)
        if status:
            return status
    return 0


# Tools with extra work `greenfly check` does when one of their flags asks (e.g. --salvage).
CHECK_HOOKS = ("journal", "redis_probe")


GC_THRESHOLD = (20_000, 10, 10)


def tune_gc() -> None:
    """Take what start-up built (modules, config: never garbage) out of the collector's scans,
    and run the youngest generation after 20,000 net container allocations instead of 700.
    A burst of in-flight messages briefly holds thousands of short-lived tuples and records
    that reference counting frees anyway; with the default the collector ran ~45 times a
    second under durable QoS 1 load and cost 5-10% of the broker's CPU per message.
    No full collection first: at this point it found 0 to 15 unreachable objects among
    22,000-32,000 and cost 5-10 ms of every cold start; freezing those few is cheaper.
    It runs before the journal is restored, so restored sessions stay collectable. The first
    trim after a burst of closes unfreezes them again (server/memory.py, release_free_lists):
    from then on a collection of the oldest generation, rare, scans them too (a few ms)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def run(path: str | None) -> int:
    config = load_config_or_report(path)
    if config is None:
        return 2
    journal = setup_logging(config.log.level, config.log.format)
    # Imported here, not at the top: `greenfly passwd`, `deploy`, `inspect` and `check` never
    # load gevent or the runtime (a test holds `import broker.cli` to that).
    import gevent

    from .server.log_format import log_uncaught
    from .server.root import Broker

    log_uncaught(gevent.get_hub())

    try:
        broker = Broker(config)  # reads password, ACL and TLS files
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    log.info("greenfly %s starting with %s%s", __version__,
             path or "the embedded default config",
             "; logging to the systemd journal with syslog priorities" if journal else "")

    def reload() -> None:
        if not path:
            log.info("SIGHUP: running on the embedded default config; nothing to reload")
            return
        try:
            new = load_file(path)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)
            return
        try:
            broker.reconfigure(new)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)
            return
        if [(item.bind, item.port, item.protocol) for item in new.listeners] != \
                [(item.config.bind, item.config.port, item.config.protocol)
                 for item in broker.listeners]:
            log.warning("SIGHUP: added, removed or moved listeners need a restart; "
                        "they are not applied")
        setup_logging(new.log.level, new.log.format)
        log.info("SIGHUP: configuration reloaded from %s (passwords, ACL, TLS certificates, "
                 "limits, log level and format)", path)

    # A file-size limit (ulimit -f) must surface as EFBIG on the journal write, which the
    # journal handles like a full disk, not as SIGXFSZ killing the process mid-write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    gevent.signal_handler(signal.SIGTERM, broker.stop)
    gevent.signal_handler(signal.SIGINT, broker.stop)
    gevent.signal_handler(signal.SIGHUP, broker.notify.around_reload(reload))
    tune_gc()
    try:
        broker.serve_forever()
    except ConfigError as exc:  # a listener that cannot listen: its file, line and key
        log.error("cannot start: %s", exc)
        broker.stop()
        return 1
    except JournalCorrupt as exc:
        log.error("cannot start: the session journal %s is damaged at offset %d (%s). Nothing "
                  "was changed. To keep every intact record, before and after it, and start, "
                  "run: greenfly check --salvage%s", exc.path, exc.offset, exc.reason,
                  f" -c {path}" if path else "")
        return 3
    except DataDirInUse as exc:
        log.error("cannot start: %s. Stop that broker, or give this one a data_dir of its own "
                  "(two brokers on one journal corrupt each other)", exc)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        broker.stop()
        return 1
    return 0
