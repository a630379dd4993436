"""A listener that cannot listen, said in the configuration's terms: file, line and key.

`greenfly check` (trying each listener's address) and the broker's start-up (opening them)
describe the same failure the same way, as a `ConfigError` naming the `[[listener]]` line
that caused it: `port` for a port in use or not allowed, `bind` for an address this machine
does not have or cannot resolve.
"""

from __future__ import annotations

import errno

from ..errors import ConfigError
from .loading import DEFAULT_CONFIG_TOML, _Locator, read_text
from .schema import Config


def bind_failure(config: Config, index: int, exc: OSError) -> ConfigError:
    """Why listener `index` of `config` could not listen, naming its file, line and key."""
    listener = config.listeners[index]
    where = f"{listener.bind}:{listener.port}"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        key, message = "port", (f"cannot listen on {where}: address already in use (another "
                                "program, or another greenfly, listens there)")
    elif exc.errno == errno.EACCES:
        key, message = "port", (f"cannot listen on {where}: permission denied (ports below "
                                "1024 need root or CAP_NET_BIND_SERVICE)")
    else:  # EADDRNOTAVAIL, a name that does not resolve (gaierror), ...
        key, message = "bind", (f"cannot listen on {where}: {reason} (is {listener.bind} an "
                                "address of this machine?)")
    return config_error_at(config.source, "listener", index, key, message)


def config_error_at(source: str, table: str, index: int | None, key: str | None,
                    message: str) -> ConfigError:
    """A ConfigError naming the line of a key in `source` (a file, or the embedded default),
    for a problem found after loading."""
    if source == "<default>":
        text = DEFAULT_CONFIG_TOML
    else:
        try:
            text = read_text(source)
        except ConfigError:
            text = ""  # the file changed or went since it was loaded: no line to name
    return _Locator(text, source).error(table, index, key, message)
