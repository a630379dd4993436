#!/bin/sh
# What the test suite needs beyond the Python packages in .venv: real clients and servers
# from Debian. Installs only what is missing, so a second run does nothing.
set -eu
cd "$(dirname "$0")/../.."
missing=""
need() {  # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}
need mosquitto_pub mosquitto-clients
# shellcheck disable=SC2086
[ -z "$missing" ] || tests/setup/install-system-packages.sh $missing
