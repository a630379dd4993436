#!/bin/sh
# Install the named Debian packages (as root, with apt-get). Used by the Makefile and by
# install-test-deps.sh; says clearly what is missing when it cannot install.
#
# The tests need mosquitto, nginx, supervisord and redis-server as programs they start
# themselves, not as system services: a mosquitto service would take port 1883 from `make run`,
# nginx port 80, redis-server 6379 (the [cluster] default, shared with whatever else runs there).
# So services are kept from starting during the install (policy-rc.d, Debian's own switch)
# and the ones this script installed are disabled afterwards.
set -eu
[ "$#" -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "greenfly: missing Debian packages: $*" >&2
    echo "greenfly: install them (as root: apt-get install $*) and run make again" >&2
    exit 1
fi
echo "greenfly: installing Debian packages: $*"
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=yes
fi
status=0
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || status=$?
[ -z "$made_policy" ] || rm -f "$policy"
[ "$status" = 0 ] || exit "$status"
if command -v systemctl >/dev/null 2>&1; then
    for package in "$@"; do
        case "$package" in
            mosquitto|nginx*|supervisor|prometheus|redis-server)
                service=${package%-light}
                systemctl disable "$service" >/dev/null 2>&1 || true
                ;;
        esac
    done
fi
