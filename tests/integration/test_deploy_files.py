"""The files in deploy/: exactly `greenfly deploy ...` for deploy/greenfly.toml, accepted by
`nginx -t`, frp's two files valid against the keys frp documents, and the numbers in every
file following the broker configuration.

frp is not packaged for Debian and nothing may be downloaded here, so its files are checked
against frp's documented configuration keys rather than run: the key lists below are written
from frp's reference files for the TOML format of v0.52 and later (conf/frps_full_example.toml,
conf/frpc_full_example.toml and the structs in pkg/config/v1).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from support.broker import REPO
from support.deploy import Nginx, deploy, greenfly, self_signed

SAMPLE = REPO / "deploy/greenfly.toml"
FILES = {
    "nginx": "deploy/nginx/greenfly.conf",
    "nginx-stream": "deploy/nginx/greenfly-stream.conf",
    "frps": "deploy/frp/frps.toml",
    "frpc": "deploy/frp/frpc.toml",
    "systemd": "deploy/systemd/greenfly.service",
    "supervisor": "deploy/supervisor/greenfly.conf",
}


@pytest.mark.parametrize("tool", list(FILES))
def test_deploy_file_is_greenfly_deploy_output_for_the_sample_config(tool):
    shipped = (REPO / FILES[tool]).read_text()
    options = ()
    if tool in ("frps", "frpc"):  # a random token each time: the shipped files share one
        options = ("--token", token((REPO / FILES["frps"]).read_text()))
    assert deploy(tool, "deploy/greenfly.toml", *options) == shipped, (
        f"{FILES[tool]} is not what `greenfly deploy {tool} -c deploy/greenfly.toml` prints; "
        f"regenerate it: .venv/bin/greenfly deploy {tool} -c deploy/greenfly.toml > "
        f"{FILES[tool]}")


def test_shipped_nginx_files_pass_nginx_t(tmp_path):
    cert, key = self_signed(tmp_path / "certs")

    def localize(text: str) -> str:  # certbot's files do not exist here
        return (text.replace("/etc/letsencrypt/live/mqtt.example.com/fullchain.pem", str(cert))
                .replace("/etc/letsencrypt/live/mqtt.example.com/privkey.pem", str(key)))

    nginx = Nginx(tmp_path / "nginx", http=localize((REPO / FILES["nginx"]).read_text()),
                  stream=localize((REPO / FILES["nginx-stream"]).read_text()))
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    broken = Nginx(tmp_path / "broken", http=localize((REPO / FILES["nginx"]).read_text())
                   .replace("proxy_http_version 1.1;", "proxy_http_version 1.1"))
    assert broken.test_config().returncode != 0  # the check can fail


def test_shipped_timeouts_are_2x_max_keepalive_with_the_arithmetic_beside_them():
    why = "# 600 s = 2 x max_keepalive 300 s: above the 450 s (1.5 x 300 s) a live client"
    nginx = (REPO / FILES["nginx"]).read_text()
    assert f"proxy_read_timeout 600s;  {why}" in nginx
    assert f"proxy_send_timeout 600s;  {why}" in nginx
    assert f"proxy_timeout 600s;  {why}" in (REPO / FILES["nginx-stream"]).read_text()
    for header in ("proxy_set_header Upgrade $http_upgrade;", "proxy_buffering off;",
                   "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                   "proxy_set_header X-Real-IP $remote_addr;", "proxy_http_version 1.1;",
                   "return 301 https://$host$request_uri;"):
        assert header in nginx


# -- frp ------------------------------------------------------------------------------------

FRPS_KEYS = {
    "bindAddr", "bindPort", "kcpBindPort", "quicBindPort", "proxyBindAddr", "vhostHTTPPort",
    "vhostHTTPSPort", "vhostHTTPTimeout", "tcpmuxHTTPConnectPort", "tcpmuxPassthrough",
    "subDomainHost", "custom404Page", "allowPorts", "maxPortsPerClient", "userConnTimeout",
    "udpPacketSize", "natholeAnalysisDataReserveHours", "detailedErrorsToClient",
    "enablePrometheus", "httpPlugins",
    "auth.method", "auth.token", "auth.additionalScopes", "auth.tokenSource.type",
    "auth.tokenSource.file.path", "auth.oidc.issuer", "auth.oidc.audience",
    "auth.oidc.skipExpiryCheck", "auth.oidc.skipIssuerCheck",
    "transport.tcpMux", "transport.tcpMuxKeepaliveInterval", "transport.tcpKeepalive",
    "transport.maxPoolCount", "transport.heartbeatTimeout", "transport.tls.force",
    "transport.tls.certFile", "transport.tls.keyFile", "transport.tls.trustedCaFile",
    "transport.quic.keepalivePeriod", "transport.quic.maxIdleTimeout",
    "transport.quic.maxIncomingStreams",
    "webServer.addr", "webServer.port", "webServer.user", "webServer.password",
    "webServer.tls.certFile", "webServer.tls.keyFile", "webServer.assetsDir",
    "webServer.pprofEnable", "log.to", "log.level", "log.maxDays", "log.disablePrintColor",
    "sshTunnelGateway.bindPort", "sshTunnelGateway.privateKeyFile",
    "sshTunnelGateway.autoGenPrivateKeyPath", "sshTunnelGateway.authorizedKeysFile",
}
FRPS_PORT_RANGE_KEYS = {"start", "end", "single"}

FRPC_KEYS = {
    "clientID", "user", "serverAddr", "serverPort", "natHoleStunServer", "dnsServer",
    "loginFailExit", "start", "udpPacketSize", "includes", "featureGates", "proxies", "visitors",
    "auth.method", "auth.token", "auth.additionalScopes", "auth.tokenSource.type",
    "auth.tokenSource.file.path", "auth.oidc.clientID", "auth.oidc.clientSecret",
    "auth.oidc.audience", "auth.oidc.scope", "auth.oidc.tokenEndpointURL",
    "log.to", "log.level", "log.maxDays", "log.disablePrintColor",
    "webServer.addr", "webServer.port", "webServer.user", "webServer.password",
    "webServer.assetsDir", "webServer.pprofEnable",
    "transport.protocol", "transport.dialServerTimeout", "transport.dialServerKeepalive",
    "transport.connectServerLocalIP", "transport.proxyURL", "transport.poolCount",
    "transport.tcpMux", "transport.tcpMuxKeepaliveInterval", "transport.heartbeatInterval",
    "transport.heartbeatTimeout", "transport.tls.enable", "transport.tls.certFile",
    "transport.tls.keyFile", "transport.tls.trustedCaFile", "transport.tls.serverName",
    "transport.tls.disableCustomTLSFirstByte", "transport.quic.keepalivePeriod",
    "transport.quic.maxIdleTimeout", "transport.quic.maxIncomingStreams",
}
PROXY_KEYS = {
    "name", "type", "enabled", "localIP", "localPort", "annotations", "metadatas", "plugin",
    "transport.useEncryption", "transport.useCompression", "transport.bandwidthLimit",
    "transport.bandwidthLimitMode", "transport.proxyProtocolVersion", "loadBalancer.group",
    "loadBalancer.groupKey", "healthCheck.type", "healthCheck.timeoutSeconds",
    "healthCheck.maxFailed", "healthCheck.intervalSeconds", "healthCheck.path",
    "healthCheck.httpHeaders",
}
PROXY_TYPE_KEYS = {
    "tcp": {"remotePort"},
    "http": {"customDomains", "subdomain", "locations", "httpUser", "httpPassword",
             "hostHeaderRewrite", "requestHeaders", "responseHeaders", "routeByHTTPUser"},
}


def flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML tables as frp's dotted keys; arrays of tables stay whole."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unknown_keys(config: dict[str, Any], documented: set[str]) -> list[str]:
    found = flat(config)
    bad = [key for key in found if key not in documented]
    for i, proxy in enumerate(found.get("proxies", [])):
        allowed = PROXY_KEYS | PROXY_TYPE_KEYS.get(proxy.get("type"), set())
        bad += [f"proxies[{i}].{key}" for key in flat(proxy) if key not in allowed]
    for i, ports in enumerate(found.get("allowPorts", [])):
        bad += [f"allowPorts[{i}].{key}" for key in ports if key not in FRPS_PORT_RANGE_KEYS]
    return bad


def load(tool: str) -> dict[str, Any]:
    return tomllib.loads((REPO / FILES[tool]).read_text())


def test_frp_files_use_only_keys_frp_documents():
    assert unknown_keys(load("frps"), FRPS_KEYS) == []
    assert unknown_keys(load("frpc"), FRPC_KEYS) == []
    # The check can fail: a key in the wrong case is not frp's.
    assert unknown_keys({"transport": {"tcpMuxKeepAliveInterval": 30}}, FRPC_KEYS) == [
        "transport.tcpMuxKeepAliveInterval"]


def test_frp_files_expose_the_broker_listeners_through_one_keepalive_tunnel():
    frps, frpc = flat(load("frps")), flat(load("frpc"))
    sample = tomllib.loads(SAMPLE.read_text())
    ports = {item["protocol"]: item["port"] for item in sample["listener"]}
    assert frps["bindPort"] == frpc["serverPort"] == 7000
    assert frps["auth.token"] == frpc["auth.token"] and frps["auth.method"] == "token"
    assert frps["vhostHTTPPort"] == ports["websockets"]
    assert frps["proxyBindAddr"] == "127.0.0.1"
    tcp, http = frpc["proxies"]
    assert (tcp["type"], tcp["localPort"], tcp["remotePort"]) == ("tcp", ports["mqtt"],
                                                                  ports["mqtt"])
    assert frps["allowPorts"] == [{"single": tcp["remotePort"]}]
    assert (http["type"], http["localPort"]) == ("http", ports["websockets"])
    assert http["customDomains"] == ["mqtt.example.com"] and http["locations"] == ["/mqtt"]
    assert frpc["serverAddr"] == "mqtt.example.com" and frpc["loginFailExit"] is False
    for side in (frps, frpc):
        assert side["transport.tcpMux"] is True
        assert side["transport.tcpMuxKeepaliveInterval"] == 30


# -- `greenfly deploy` follows the broker configuration -----------------------------------------

def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "greenfly.toml"
    path.write_text(f'[broker]\ndata_dir = "{tmp_path}/data"\n' + body)
    return path


def test_ports_paths_and_timeouts_follow_the_config(tmp_path):
    config = write_config(tmp_path, "[limits]\nmax_keepalive = 45\n"
                          '[[listener]]\nport = 11883\n'
                          '[[listener]]\nport = 19999\nprotocol = "websockets"\n'
                          'path = ["/mqtt", "/ws"]\n')
    nginx = deploy("nginx", config)
    assert "server 127.0.0.1:19999;" in nginx
    assert "location /mqtt {" in nginx and "location /ws {" in nginx
    assert ("proxy_read_timeout 90s;  # 90 s = 2 x max_keepalive 45 s: above the 67.5 s "
            "(1.5 x 45 s)") in nginx
    stream = deploy("nginx-stream", config)
    assert "server 127.0.0.1:11883;" in stream and "proxy_timeout 90s;" in stream
    assert flat(tomllib.loads(deploy("frps", config)))["vhostHTTPPort"] == 19999
    frpc = tomllib.loads(deploy("frpc", config, "--domain", "home.example.org"))
    assert frpc["proxies"][1]["locations"] == ["/mqtt", "/ws"]
    assert frpc["proxies"][1]["customDomains"] == ["home.example.org"]


def test_an_unset_max_keepalive_is_pointed_out(tmp_path):
    config = write_config(tmp_path, '[[listener]]\nport = 9001\nprotocol = "websockets"\n')
    result = greenfly("deploy", "nginx", "-c", str(config))
    assert "proxy_read_timeout 131070s;" in result.stdout
    assert "set [limits] max_keepalive" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["nginx"], "no websockets listener without TLS for nginx to proxy to"),
    (["systemd", "--listen", "127.0.0.1:80"], "--listen does not apply to systemd"),
    (["nginx-stream", "--listen", "not a port"], "expected PORT or ADDR:PORT"),
    (["nginx", "--listen", "127.0.0.1:99999"], "--listen '127.0.0.1:99999': port 99999 is "
     "not in 1..65535"),
    (["nginx", "--listen", "0"], "port 0 is not in 1..65535"),
    (["nginx-stream", "--listen", "127.0.0.300:8883"], "'127.0.0.300' is not an IPv4 address"),
    (["nginx", "--http-listen", "[::g]:80"], "'::g' is not an IPv6 address"),
    (["frpc", "--listen", "vps.example.org:70000"], "port 70000 is not in 1..65535"),
    (["systemd", "--domain", "mqtt.example.org"], "--domain does not apply to systemd"),
    (["supervisor", "--domain", "mqtt.example.org"], "--domain does not apply to supervisor"),
    (["frps", "--domain", "mqtt.example.org"], "--domain does not apply to frps"),
    (["nginx-stream", "--no-tls", "--domain", "mqtt.example.org"],
     "--domain does not apply to nginx-stream --no-tls"),
    (["frps", "--token", "CHANGE-ME"], "--token CHANGE-ME is the old placeholder"),
    (["frpc", "--token", "short"], "--token: at least 16 characters"),
    (["frpc", "--token", 'a"b' * 8], "--token: only letters, digits and -._~+/="),
    (["nginx", "--token", "x" * 20], "--token does not apply to nginx"),
])
def test_what_cannot_work_is_refused_with_a_reason(tmp_path, args, message):
    websockets = '[[listener]]\nport = 9001\nprotocol = "websockets"\n'
    config = write_config(tmp_path, "[[listener]]\nport = 1883\n"
                          + (websockets if args != ["nginx"] else ""))
    result = greenfly("deploy", *args, "-c", str(config), check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr


# -- a proxy must not publish a broker that takes anonymous clients ------------------------------

ANONYMOUS_WARNING = "WARNING: behind a proxy, the "


@pytest.mark.parametrize(("tool", "broker", "listener", "says"), [
    # allow_anonymous not set, everything on loopback: anonymous clients come from loopback
    # only, but a TCP proxy without the PROXY protocol makes everyone 127.0.0.1.
    ("nginx-stream", "", "port = 1883\n", "mqtt listener 127.0.0.1:1883 would accept anyone "
     "on the internet without a user name: with allow_anonymous not set it accepts anonymous "
     "clients from loopback addresses, and a TCP proxy (nginx-stream, frp) makes every client "
     "look like 127.0.0.1"),
    ("frpc", "", "port = 1883\n", "mqtt listener 127.0.0.1:1883 would accept"),
    ("nginx", "", 'port = 9001\nprotocol = "websockets"\ntrusted_proxies = ["10.0.0.0/8"]\n',
     "127.0.0.1 is not in its trusted_proxies"),
    ("nginx-stream", "allow_anonymous = true\n", "port = 1883\nproxy_protocol = true\n",
     "mqtt listener 127.0.0.1:1883 accepts anyone on the internet without a user name "
     "(allow_anonymous = true, set in [broker])"),
])
def test_deploy_and_check_warn_loudly_when_a_proxy_would_let_anonymous_clients_in(
        tmp_path, tool, broker, listener, says):
    config = write_config(tmp_path, f"{broker}[[listener]]\n{listener}")
    result = greenfly("deploy", tool, "-c", str(config))
    assert f"greenfly deploy {tool}: {ANONYMOUS_WARNING}" in result.stderr
    assert says in result.stderr, result.stderr
    assert result.stdout.startswith(f"# {ANONYMOUS_WARNING}")  # in the file too
    checked = greenfly("check", "-c", str(config))
    assert f"greenfly check: {ANONYMOUS_WARNING}" in checked.stderr and says in checked.stderr


@pytest.mark.parametrize(("tool", "broker", "listener"), [
    ("nginx-stream", "", "port = 1883\nproxy_protocol = true\n"),  # the proxy names clients
    ("nginx", "", 'port = 9001\nprotocol = "websockets"\n'),  # nginx's X-Forwarded-For
    ("nginx-stream", "allow_anonymous = false\n", "port = 1883\n"),
    ("nginx-stream", "", 'bind = "0.0.0.0"\nport = 1883\n'),  # not set, public: refused
])
def test_no_warning_when_the_real_address_or_a_password_decides(tmp_path, tool, broker,
                                                                listener):
    config = write_config(tmp_path, f"{broker}[[listener]]\n{listener}")
    assert "WARNING" not in greenfly("deploy", tool, "-c", str(config)).stderr
    assert "WARNING" not in greenfly("check", "-c", str(config)).stderr


def test_the_kit_warns_of_nothing():
    for tool in ("nginx", "nginx-stream", "frpc", "frps"):
        assert "WARNING" not in greenfly("deploy", tool, "-c", str(SAMPLE)).stderr


def token(rendered: str) -> str:
    return flat(tomllib.loads(rendered))["auth.token"]


def test_frp_gets_a_random_token_unless_one_is_given(tmp_path):
    config = write_config(tmp_path, "[[listener]]\nport = 1883\n")
    first = greenfly("deploy", "frps", "-c", str(config))
    second = greenfly("deploy", "frps", "-c", str(config))
    generated = token(first.stdout)
    assert generated != token(second.stdout) and len(generated) >= 32
    assert "CHANGE-ME" not in first.stdout
    # It says what to give the other side.
    assert f"greenfly deploy frpc --token {generated}" in first.stderr
    frpc = greenfly("deploy", "frpc", "-c", str(config), "--token", generated)
    assert token(frpc.stdout) == generated and "generated" not in frpc.stderr
    alone = greenfly("deploy", "frpc", "-c", str(config))
    assert f"greenfly deploy frps --token {token(alone.stdout)}" in alone.stderr
