"""`greenfly clients`, `greenfly kick CLIENT_ID` and `greenfly top`: the admin API from a shell.

Each finds the broker's http listener (`-c FILE`, or a URL; see `admin_client`), so an
operator on the VPS types one word instead of a curl line with a token. Exit status: 0 done,
1 the broker could not be reached or refused, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ..config.loading import load_default, load_file
from ..errors import ConfigError
from .admin_client import AdminClient, AdminError, endpoint_from_config, endpoint_from_url
from .client_table import client_table


def register(commands: Any, config_option: argparse.ArgumentParser) -> None:
    where = argparse.ArgumentParser(add_help=False, parents=[config_option])
    where.add_argument("--token-file", metavar="FILE",
                       help="the bearer token (default: the http listener's token_file)")
    where.add_argument("--insecure", action="store_true",
                       help="https: do not verify the listener's certificate")
    url_help = ("the http listener's URL, e.g. http://127.0.0.1:8080 (default: the first "
                "protocol = \"http\" listener of -c FILE or of the embedded configuration)")
    clients = commands.add_parser("clients", parents=[where],
                                  help="print the connected clients once",
                                  description="Print the table of connected clients.")
    clients.add_argument("url", nargs="?", help=url_help)
    clients.set_defaults(handler=_clients)
    kick = commands.add_parser("kick", parents=[where], help="disconnect one client",
                               description="Disconnect a connected client (MQTT 5 clients get "
                               "DISCONNECT 0x98 administrative action; the will is published). "
                               "Needs the http listener's bearer token.")
    kick.add_argument("client_id", help="the client id to disconnect")
    kick.add_argument("url", nargs="?", help=url_help)
    kick.set_defaults(handler=_kick)
    top = commands.add_parser("top", parents=[where],
                              help="live view of the broker in the terminal (q quits)",
                              description="Clients, message rates, drops and queues, "
                              "refreshed once a second; q quits.")
    top.add_argument("url", nargs="?", help=url_help)
    top.set_defaults(handler=_top)


def connect(args: argparse.Namespace, config_path: str | None) -> AdminClient:
    """The client for the listener named by the URL or the configuration; AdminError or
    ConfigError say why there is none."""
    if args.url:
        if config_path:
            raise AdminError("give either -c FILE or a URL, not both")
        return AdminClient(endpoint_from_url(args.url, args.token_file, args.insecure))
    config = load_file(config_path) if config_path else load_default()
    return AdminClient(endpoint_from_config(config, args.token_file, args.insecure))


def _run(command: str, args: argparse.Namespace, config_path: str | None) -> int:
    try:
        client = connect(args, config_path)
    except ConfigError as exc:
        print(f"greenfly {command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"greenfly {command}: {exc}", file=sys.stderr)
        return 2
    try:
        if command == "clients":
            return _print_clients(client)
        if command == "kick":
            client.kick(args.client_id)
            print(f"disconnected {args.client_id}")
            return 0
        from .top_screen import run_top  # the terminal code only where a terminal is used

        return run_top(client)
    except AdminError as exc:
        print(f"greenfly {command}: {exc}", file=sys.stderr)
        return 1


def _clients(args: argparse.Namespace, config_path: str | None) -> int:
    return _run("clients", args, config_path)


def _kick(args: argparse.Namespace, config_path: str | None) -> int:
    return _run("kick", args, config_path)


def _top(args: argparse.Namespace, config_path: str | None) -> int:
    return _run("top", args, config_path)


def _print_clients(client: AdminClient) -> int:
    page = client.clients()
    for line in client_table(page["items"], datetime.now(UTC)):
        print(line)
    shown = len(page["items"])
    more = f" (the first {shown} shown)" if page["total"] > shown else ""
    print(f"{page['total']} client(s) connected{more}")
    return 0
