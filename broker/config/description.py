"""A configuration put into words: `greenfly check`'s summary and the README's key table,
both generated from the schema so they cannot drift from it."""

from __future__ import annotations

import dataclasses
from typing import Any

from .schema import ANONYMOUS_WORDS, SECTIONS, Config, anonymous_policy


def describe(config: Config) -> list[str]:
    """Human-readable lines saying what this configuration would do (for `greenfly check`)."""
    lines = [f"{listener.protocol} on {listener.bind}:{listener.port}"
             + (f" at {', '.join(listener.path)}" if listener.protocol == "websockets" else "")
             + (" (PROXY protocol)" if listener.proxy_protocol else "")
             for listener in config.listeners]
    persistence = config.persistence
    lines.append(f"sessions journaled in {config.broker.data_dir} (fsync = {persistence.fsync})"
                 if persistence.enabled else "sessions kept in memory only (persistence off)")
    for listener in config.listeners:
        policy, why = anonymous_policy(config, listener)
        where = f"{listener.bind}:{listener.port}"
        lines.append(f"{where}: anonymous clients {ANONYMOUS_WORDS[policy]} ({why})")
        password_file = listener.password_file or config.broker.password_file
        if password_file:
            lines.append(f"{where}: passwords from {password_file}")
        acl_file = listener.acl_file or config.broker.acl_file
        if acl_file:
            lines.append(f"{where}: access rules from {acl_file}")
        if listener.tls:
            lines.append(f"{where}: TLS ({listener.tls_version} or newer"
                         + (", client certificate required" if listener.require_certificate
                            else "") + ")")
    cluster = config.cluster
    if cluster is not None:
        lines.append(f"cluster node {cluster.node_id!r} on {cluster.redis_url} (keys under "
                     f"{cluster.key_prefix!r}, lease {cluster.lease_ms} ms"
                     + (f", password from {cluster.redis_password_file}"
                        if cluster.redis_password_file else ", no password") + ")")
    return lines


def documented_keys() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every key, in order: the README's table comes from here."""
    out = []
    for table, (_attr, cls, _is_array) in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out.append((table, f.name, f.default, f.metadata["doc"]))
    return out


def _markdown_default(value: Any) -> str:
    if value is None:
        return "not set"
    if value in ("", ()):  # no default: a key the section needs (`check_given` says so)
        return "required"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{item}"' if isinstance(item, str) else f"{item:g}"
                                for item in value) + "]`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def markdown_table() -> str:
    """Every key with its default and doc, as the README's configuration table."""
    rows = ["| section | key | default | meaning |", "|---|---|---|---|"]
    for table, key, default, doc in documented_keys():
        name = f"[[{table}]]" if SECTIONS[table][2] else f"[{table}]"
        rows.append(f"| `{name}` | `{key}` | {_markdown_default(default)} | {doc} |")
    return "\n".join(rows) + "\n"
