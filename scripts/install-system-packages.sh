#!/bin/sh
# Debian packages the integration tests run as real peers:
#   netconfd (yuma123 NETCONF server, with netconf-subsystem), openssh-server
#   (sshd in front of it), socat (the reverse relay that makes them call home);
#   libnetconf2-dev, gcc, pkg-config for the libnetconf2 call-home device the
#   tests compile (tests/integration/ln2_device/), plus libssh-dev and libssl-dev:
#   libnetconf2-dev 2.0's <nc_server.h> includes libssh's and OpenSSL's headers
#   without depending on their -dev packages;
#   libyang2-tools (yanglint: the agent's call-home fixtures and the roles'
#   rendered payloads against the real schema);
#   for the roles' molecule scenarios: iproute2 (network namespaces), nftables
#   (the NAT router), python3-venv (the roles' virtualenvs);
#   openjdk-17-jre-headless (ansible-rulebook's rule engine, Drools, is Java 17);
#   haproxy (the L4 balancer with PROXY v2 in front of gateways), redis-server (the
#   cluster's shared registry), iproute2 and nftables (the cluster tests' hosts are
#   network namespaces) - docs/scale.md. Their services are not started (policy-rc.d).
# Never install netconfd-module-ietf-interfaces / -ietf-system: they act on the
# host and crash netconfd on <get>.
set -eu
PACKAGES="netconfd openssh-server openssh-client socat stunnel4 libnetconf2-dev libssh-dev libssl-dev gcc pkg-config libyang2-tools iproute2 nftables python3-venv openjdk-17-jre-headless haproxy redis-server"
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    exit 1
fi
echo "installing Debian packages:$missing" >&2
apt-get update -qq
# do not start the system sshd: the tests run their own on high ports
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
