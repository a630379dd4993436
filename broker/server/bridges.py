"""`Bridges`: the broker's `[[bridge]]`s, started after the journal is restored (so each
finds its session and what it still owes) and reconciled on reload: a bridge whose section
changed reconnects with the new one, a removed one stops and its session is discarded, the
others stay up untouched."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..config.schema import BridgeSection, Config
from ..core.bridge_session import remove_unconfigured, session_id
from ..core.context import BrokerContext

if TYPE_CHECKING:
    from ..link.bridge import Bridge

log = logging.getLogger("greenfly.bridge")


class Bridges:
    def __init__(self, ctx: BrokerContext, config: Config) -> None:
        self.ctx = ctx
        # Built now: a bad TLS file is a ConfigError before anything starts
        self.bridges = {section.name: _bridge(ctx, section) for section in config.bridges}

    def start(self) -> None:
        remove_unconfigured(self.ctx.registry, set(self.bridges))
        for bridge in self.bridges.values():
            bridge.start()

    def stop(self) -> None:
        for bridge in self.bridges.values():
            bridge.stop()

    def reconfigure(self, config: Config) -> None:
        """Apply `config`'s bridges: raises ConfigError (bad TLS files) before changing any."""
        wanted = {section.name: section for section in config.bridges}
        fresh = {name: _bridge(self.ctx, section) for name, section in wanted.items()
                 if name not in self.bridges or self.bridges[name].config != section}
        for name, bridge in list(self.bridges.items()):
            if name not in wanted or name in fresh:
                log.info("bridge %s: %s by the reload", name,
                         "changed" if name in wanted else "removed")
                bridge.stop()
                del self.bridges[name]
        remove_unconfigured(self.ctx.registry, set(wanted))
        for name, bridge in fresh.items():
            self.bridges[name] = bridge
            bridge.start()

    def states(self) -> dict[str, str | None]:
        """Bridge name -> the address it is connected to, or None while it is down."""
        return {name: bridge.connected_to for name, bridge in self.bridges.items()}

    def __iter__(self) -> Iterator[Bridge]:
        """The running bridges, by name: what /metrics and the admin API read."""
        return iter([self.bridges[name] for name in sorted(self.bridges)])


def _bridge(ctx: BrokerContext, section: BridgeSection) -> Bridge:
    from ..link.bridge import Bridge  # its client side and ssl: only with a [[bridge]]

    return Bridge(ctx, section)


__all__ = ["Bridges", "session_id"]
