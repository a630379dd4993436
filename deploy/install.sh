#!/bin/sh
# Install greenfly from this checkout on a bare Debian or Ubuntu VPS, as root:
#
#     sudo deploy/install.sh [--user NAME] [--password PASSWORD] [--no-start]
#     deploy/install.sh --prefix DIR [...]   into a scratch root: no system user, no systemd,
#                                            no apt (for tests, or to look before installing)
#
# Each step runs only when it is needed, so running the script again changes nothing (and,
# after a `git pull`, reinstalls the code and restarts the service):
#   1. the system user `greenfly` (no login shell; home /var/lib/greenfly)
#   2. a virtualenv in /opt/greenfly holding greenfly from this checkout, reinstalled only
#      when the source differs from what was installed
#   3. /etc/greenfly/greenfly.toml from deploy/greenfly.toml: anonymous clients refused,
#      MQTT (1883) and WebSockets (9001) on loopback for nginx in front. Never overwritten.
#   4. /etc/greenfly/passwd with a first MQTT user: --user NAME and --password PASSWORD (or
#      the GREENFLY_PASSWORD variable, which stays out of `ps`), else asked at the terminal
#   5. /etc/systemd/system/greenfly.service (`greenfly deploy systemd`), enabled and started
set -eu

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}

PREFIX=""
MQTT_USER=""
MQTT_PASSWORD="${GREENFLY_PASSWORD:-}"
START=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { usage >&2; exit 2; }; PREFIX=$2; shift ;;
        --user) [ $# -ge 2 ] || { usage >&2; exit 2; }; MQTT_USER=$2; shift ;;
        --password) [ $# -ge 2 ] || { usage >&2; exit 2; }; MQTT_PASSWORD=$2; shift ;;
        --no-start) START=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { echo "greenfly install: $*"; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1  # running greenfly below must not add files to the venv

if [ -n "$PREFIX" ]; then
    mkdir -p "$PREFIX"
    PREFIX=$(cd "$PREFIX" && pwd)
    SYSTEM=0
else
    [ "$(id -u)" = 0 ] || { echo "install.sh: run as root (or try --prefix DIR)" >&2; exit 1; }
    SYSTEM=1
fi
OPT=$PREFIX/opt/greenfly
ETC=$PREFIX/etc/greenfly
DATA=$PREFIX/var/lib/greenfly
LOGS=$PREFIX/var/log/greenfly  # supervisord's stdout_logfile (it creates no directories)
UNIT=$PREFIX/etc/systemd/system/greenfly.service
GREENFLY=$OPT/bin/greenfly

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
    echo "install.sh: greenfly needs Python 3.11 or newer as $PYTHON" >&2; exit 1; }

# 1. The user the broker runs as.
if [ "$SYSTEM" = 1 ] && ! id greenfly >/dev/null 2>&1; then
    say "creating the system user greenfly"
    useradd --system --user-group --home-dir /var/lib/greenfly --no-create-home \
        --shell /usr/sbin/nologin greenfly
fi

# 2. The virtualenv, and greenfly in it when this checkout differs from what is installed.
if [ ! -x "$OPT/bin/python" ]; then
    if [ "$SYSTEM" = 1 ] && ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
        say "installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    say "creating the virtualenv $OPT"
    "$PYTHON" -m venv "$OPT"
fi
source_hash=$(cd "$SRC" && { echo pyproject.toml README.md; find broker -type f -name '*.py'; } \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
installed_hash=$(cat "$OPT/.greenfly-source" 2>/dev/null || true)
code_changed=0
if [ "$source_hash" != "$installed_hash" ]; then
    say "installing greenfly into $OPT"
    # Built from a copy, so that the checkout gets no build/ or egg-info from us.
    build=$(mktemp -d)
    cp -R "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/broker" "$build/"
    find "$build" -name __pycache__ -prune -exec rm -rf {} +
    "$OPT/bin/pip" install --quiet --disable-pip-version-check "$build"
    rm -rf "$build"
    echo "$source_hash" > "$OPT/.greenfly-source"
    code_changed=1
fi

# 3. The broker's configuration: yours after the first install, so never overwritten.
mkdir -p "$ETC" "$DATA" "$LOGS"
if [ "$SYSTEM" = 1 ]; then
    chown greenfly:greenfly "$DATA"
    chmod 0750 "$DATA"
fi
if [ ! -e "$ETC/greenfly.toml" ]; then
    say "writing $ETC/greenfly.toml"
    sed -e "s|\"/var/lib/greenfly\"|\"$DATA\"|" -e "s|\"/etc/greenfly/|\"$ETC/|" \
        "$SRC/deploy/greenfly.toml" > "$ETC/greenfly.toml.new"
    chmod 0640 "$ETC/greenfly.toml.new"
    [ "$SYSTEM" = 0 ] || chgrp greenfly "$ETC/greenfly.toml.new"
    mv "$ETC/greenfly.toml.new" "$ETC/greenfly.toml"
fi

# 4. The password file and its first user.
PASSWD=$ETC/passwd
has_user() { [ -e "$PASSWD" ] && cut -d: -f1 "$PASSWD" | grep -Fqx -- "$1"; }
if [ ! -e "$PASSWD" ] || { [ -n "$MQTT_USER" ] && ! has_user "$MQTT_USER"; }; then
    if [ -z "$MQTT_USER" ] && [ -t 0 ]; then
        printf 'greenfly install: a first MQTT user name (empty: none yet): '
        read -r MQTT_USER
    fi
    create=""
    [ -e "$PASSWD" ] || create="-c"
    if [ -z "$MQTT_USER" ]; then
        : > "$PASSWD"
        say "no MQTT user yet: add one with $GREENFLY passwd $PASSWD NAME"
    elif [ -n "$MQTT_PASSWORD" ]; then
        "$GREENFLY" passwd $create -b "$PASSWD" "$MQTT_USER" "$MQTT_PASSWORD"
    else
        "$GREENFLY" passwd $create "$PASSWD" "$MQTT_USER"
    fi
    # Hashes can be attacked offline: readable by root and the broker only.
    chmod 0640 "$PASSWD"
    [ "$SYSTEM" = 0 ] || chgrp greenfly "$PASSWD"
    [ -z "$MQTT_USER" ] || say "MQTT user $MQTT_USER is in $PASSWD"
fi

# 5. The systemd unit, rendered from the installed configuration.
unit_new=$(mktemp)
"$GREENFLY" deploy systemd -c "$ETC/greenfly.toml" --prefix "${PREFIX:-/}" > "$unit_new"
unit_changed=0
if cmp -s "$unit_new" "$UNIT"; then
    rm -f "$unit_new"
else
    say "writing $UNIT"
    mkdir -p "$(dirname "$UNIT")"
    chmod 0644 "$unit_new"
    mv "$unit_new" "$UNIT"
    unit_changed=1
fi

if [ "$SYSTEM" = 0 ]; then
    say "installed into $PREFIX (no user, no systemd): $GREENFLY -c $ETC/greenfly.toml"
    exit 0
fi
if [ ! -d /run/systemd/system ]; then
    say "systemd is not running here: see deploy/supervisor/greenfly.conf to run it under supervisord"
    exit 0
fi
[ "$unit_changed" = 0 ] || systemctl daemon-reload
systemctl enable --quiet greenfly.service
if [ "$START" = 1 ]; then
    if systemctl is-active --quiet greenfly.service; then
        if [ "$code_changed" = 1 ] || [ "$unit_changed" = 1 ]; then
            say "restarting greenfly (new code or unit)"
            systemctl restart greenfly.service
        fi
    else
        systemctl start greenfly.service
    fi
    systemctl --no-pager --lines=5 status greenfly.service || true
fi
say "done. Next: nginx in front (deploy/README.md): $GREENFLY deploy nginx --domain YOUR.DOMAIN"
