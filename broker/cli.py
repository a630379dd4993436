"""The `greenfly` command: run the broker, check a config, and the tools around it.

`greenfly [-c FILE]` runs the broker (the embedded default configuration without -c).
`greenfly check -c FILE` validates a configuration and says what it would listen on;
with `--salvage` it also repairs a damaged journal (keeping every record before the damage).
`greenfly inspect [-c FILE | -d DIR]` prints what the journal holds without starting.
Signals: SIGTERM and SIGINT stop gracefully; SIGHUP re-reads the configuration file and
applies what can change live (limits, log level), keeping the running one if the new file
is broken.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import gevent

from . import __version__, journal_tools
from .config import Config, describe, load_default, load_file
from .errors import ConfigError
from .store.journal import JournalCorrupt

log = logging.getLogger("greenfly")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("-c", "--config", dest="sub_config",
                               help="TOML configuration file (default: the embedded one)")
    parser = argparse.ArgumentParser(prog="greenfly", description="greenfly MQTT broker")
    parser.add_argument("-c", "--config", help="TOML configuration file (default: embedded)")
    parser.add_argument("--version", action="version", version=f"greenfly {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", parents=[config_option],
                        help="run the broker (the default command)")
    check = commands.add_parser("check", parents=[config_option],
                                help="validate a configuration file and exit")
    check.add_argument("--salvage", action="store_true",
                       help="repair a damaged journal: keep every record before the damage "
                       "(the original is copied aside first)")
    inspect = commands.add_parser("inspect", parents=[config_option],
                                  help="print the sessions and retained messages in the journal")
    inspect.add_argument("-d", "--data-dir", help="data directory (instead of -c)")
    return parser


def load_config(path: str | None) -> Config:
    return load_file(path) if path else load_default()


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, format=LOG_FORMAT, level=level.upper(), force=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = getattr(args, "sub_config", None) or args.config
    if args.command == "check":
        return check(path, args.salvage)
    if args.command == "inspect":
        return inspect(path, args.data_dir)
    return run(path)


def check(path: str | None, salvage: bool = False) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"greenfly: configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"{path or 'embedded default config'}: OK")
    for line in describe(config):
        print(f"  {line}")
    if salvage:
        return journal_tools.salvage_command(config.broker.data_dir)
    return 0


def inspect(path: str | None, data_dir: str | None) -> int:
    if data_dir is None:
        try:
            data_dir = load_config(path).broker.data_dir
        except ConfigError as exc:
            print(f"greenfly: configuration error: {exc}", file=sys.stderr)
            return 2
    return journal_tools.inspect_command(data_dir)


def run(path: str | None) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"greenfly: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log.level)
    from .server import Broker  # imported late so `check` stays light

    broker = Broker(config)
    log.info("greenfly %s starting with %s", __version__, path or "the embedded default config")

    def reload() -> None:
        if not path:
            log.info("SIGHUP: running on the embedded default config; nothing to reload")
            return
        try:
            new = load_file(path)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)
            return
        if new.listeners != broker.config.listeners:
            log.warning("SIGHUP: listener changes need a restart; they are not applied")
        logging.getLogger().setLevel(new.log.level.upper())
        broker.reconfigure(new)
        log.info("SIGHUP: configuration reloaded from %s", path)

    # A file-size limit (ulimit -f) must surface as EFBIG on the journal write, which the
    # journal handles like a full disk, not as SIGXFSZ killing the process mid-write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    gevent.signal_handler(signal.SIGTERM, broker.stop)
    gevent.signal_handler(signal.SIGINT, broker.stop)
    gevent.signal_handler(signal.SIGHUP, reload)
    try:
        broker.serve_forever()
    except JournalCorrupt as exc:
        log.error("cannot start: the session journal %s is damaged at offset %d (%s). Nothing "
                  "was changed. To keep every record before that offset and start, run: "
                  "greenfly check --salvage%s", exc.path, exc.offset, exc.reason,
                  f" -c {path}" if path else "")
        return 3
    except OSError as exc:
        log.error("cannot start: %s", exc)
        broker.stop()
        return 1
    return 0
