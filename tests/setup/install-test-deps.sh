#!/bin/sh
# What the test suite needs beyond the Python packages in .venv: real clients and servers
# from Debian, and MQTT.js from npm for the WebSocket tests. Installs only what is missing,
# so a second run does nothing.
set -eu
cd "$(dirname "$0")/../.."
missing=""
need() {  # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}
need mosquitto_pub mosquitto-clients
# A real Mosquitto broker: the password-file tests check that it reads greenfly's hashes.
[ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
need node nodejs
need npm npm
# The deploy kit's tests run the real things in front of and around the broker: nginx (with
# the stream module for mqtts:// on 8883), supervisord, systemd-analyze for the unit, and
# openssl for the test certificates. Debian keeps nginx and supervisord in /usr/sbin.
PATH="$PATH:/usr/sbin:/sbin"
need nginx nginx-light
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing="$missing libnginx-mod-stream"
need supervisord supervisor
need systemd-analyze systemd
need openssl openssl
# The http listener's tests: a real Prometheus server scrapes /metrics, and headless Chromium
# loads the status page (Debian installs them as /usr/bin/prometheus and /usr/bin/chromium).
need prometheus prometheus
need chromium chromium
# The cluster tests start their own redis-server (AOF, appendfsync always) on a free port.
need redis-server redis-server
# shellcheck disable=SC2086
[ -z "$missing" ] || tests/setup/install-system-packages.sh $missing
# MQTT.js 5.x into tests/js/node_modules (git-ignored), pinned by tests/js/package-lock.json.
if [ ! -f tests/js/node_modules/mqtt/package.json ]; then
    echo "greenfly: installing MQTT.js into tests/js (npm)"
    (cd tests/js && npm install --no-audit --no-fund --loglevel=error)
fi
