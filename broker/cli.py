"""The `greenfly` command: run the broker, check a config, and the tools around it.

`greenfly [-c FILE]` runs the broker (the embedded default configuration without -c).
`greenfly check -c FILE` validates a configuration and says what it would listen on.
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

from . import __version__
from .config import Config, describe, load_default, load_file
from .errors import ConfigError

log = logging.getLogger("greenfly")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greenfly", description="greenfly MQTT broker")
    parser.add_argument("-c", "--config", help="TOML configuration file (default: embedded)")
    parser.add_argument("--version", action="version", version=f"greenfly {__version__}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the broker (the default command)")
    run.add_argument("-c", "--config", dest="run_config", help="TOML configuration file")
    check = commands.add_parser("check", help="validate a configuration file and exit")
    check.add_argument("-c", "--config", dest="check_config", required=True,
                       help="TOML configuration file")
    return parser


def load_config(path: str | None) -> Config:
    return load_file(path) if path else load_default()


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, format=LOG_FORMAT, level=level.upper(), force=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        return check(args.check_config)
    return run(getattr(args, "run_config", None) or args.config)


def check(path: str) -> int:
    try:
        config = load_file(path)
    except ConfigError as exc:
        print(f"greenfly: configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: OK")
    for line in describe(config):
        print(f"  {line}")
    return 0


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

    gevent.signal_handler(signal.SIGTERM, broker.stop)
    gevent.signal_handler(signal.SIGINT, broker.stop)
    gevent.signal_handler(signal.SIGHUP, reload)
    try:
        broker.serve_forever()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        broker.stop()
        return 1
    return 0
