#!/bin/sh
# Install the named Debian packages (as root, with apt-get). Used by the Makefile and by
# install-test-deps.sh; says clearly what is missing when it cannot install.
set -eu
[ "$#" -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "greenfly: missing Debian packages: $*" >&2
    echo "greenfly: install them (as root: apt-get install $*) and run make again" >&2
    exit 1
fi
echo "greenfly: installing Debian packages: $*"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
