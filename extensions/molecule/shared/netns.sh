#!/bin/sh
# Molecule hosts as Linux network namespaces (no containers, no daemon):
# create.yml and destroy.yml call this script; it needs root, iproute2,
# OpenSSH's sshd and nftables.  Every object it makes is named chm-* (or lives
# inside a chm-* namespace), so it never touches anything else on the machine.
#
#   netns.sh host NS INDEX NET DIR PUBKEY   namespace NS, its management veth
#                                           (host NET.(4*INDEX+1)/30, namespace
#                                           NET.(4*INDEX+2)/30) and an sshd on the
#                                           namespace side (root, key PUBKEY only)
#   netns.sh switch SW                      namespace SW that holds the segments' bridges
#   netns.sh link SW NS SEGMENT ADDRESS     attach NS to SEGMENT (bridge br-SEGMENT in SW),
#                                           interface SEGMENT in NS with ADDRESS/PREFIX
#   netns.sh route NS DESTINATION VIA       a route in NS (DESTINATION may be "default")
#   netns.sh nat NS OUTSIDE INSIDE          NS routes INSIDE -> OUTSIDE, masquerades it,
#                                           and drops every connection opened from OUTSIDE
#   netns.sh down NS...                     stop every process in NS (they are ours:
#                                           sshd and whatever the roles started there),
#                                           then delete NS and its links
set -eu

die() { echo "netns.sh: $*" >&2; exit 1; }
ours() { case $1 in chm-*) ;; *) die "refusing '$1': names must start with chm-" ;; esac; }
exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
in_ns() { _ns=$1; shift; ip netns exec "$_ns" "$@"; }

host() {
    ns=$1 index=$2 net=$3 dir=$4 pubkey=$5
    ours "$ns"
    exists "$ns" && die "namespace $ns exists (a previous run was not destroyed: netns.sh down $ns)"
    host_if="chm${net##*.}h${index}"
    [ ${#host_if} -le 15 ] || die "interface name $host_if too long"
    host_addr="$net.$((4 * index + 1))"
    ns_addr="$net.$((4 * index + 2))"
    if ip -o addr show | grep -q " inet $host_addr/"; then
        die "$host_addr is already configured on this machine (another run, or choose another CHM_MGMT_NET)"
    fi
    mkdir -p "$dir"
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
    ip link add "$host_if" type veth peer name mgmt0 netns "$ns"
    ip addr add "$host_addr/30" dev "$host_if"
    ip link set "$host_if" up
    in_ns "$ns" ip addr add "$ns_addr/30" dev mgmt0
    in_ns "$ns" ip link set mgmt0 up
    [ -f "$dir/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "$ns" -f "$dir/ssh_host_ed25519_key"
    cp "$pubkey" "$dir/authorized_keys"
    cat > "$dir/sshd_config" <<EOF
ListenAddress $ns_addr
Port 22
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 50
MaxSessions 50
PrintMotd no
PrintLastLog no
# the host's directory as HOME: Ansible's remote tmp stays per host, and bash
# (which sources ~/.bashrc for every command sshd runs) finds none to source
SetEnv HOME=$dir
Subsystem sftp internal-sftp
EOF
    mkdir -p /run/sshd
    in_ns "$ns" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
    echo "$ns_addr"
}

switch() {
    ours "$1"
    exists "$1" && die "namespace $1 exists (a previous run was not destroyed: netns.sh down $1)"
    ip netns add "$1"
    in_ns "$1" ip link set lo up
}

link() {
    sw=$1 ns=$2 segment=$3 address=$4
    ours "$sw"; ours "$ns"
    if ! in_ns "$sw" ip link show "br-$segment" >/dev/null 2>&1; then
        in_ns "$sw" ip link add "br-$segment" type bridge
        in_ns "$sw" ip link set "br-$segment" up
    fi
    port="$segment$(in_ns "$sw" ip -o link show master "br-$segment" | wc -l)"
    ip -n "$sw" link add "$port" type veth peer name "$segment" netns "$ns"
    in_ns "$sw" ip link set "$port" master "br-$segment" up
    in_ns "$ns" ip addr add "$address" dev "$segment"
    in_ns "$ns" ip link set "$segment" up
}

route() {
    ours "$1"
    in_ns "$1" ip route add "$2" via "$3"
}

nat() {
    ns=$1 outside=$2 inside=$3
    ours "$ns"
    in_ns "$ns" sysctl -q -w net.ipv4.ip_forward=1
    in_ns "$ns" nft -f - <<EOF
table inet chm_firewall {
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname "lo" accept
        iifname "mgmt0" accept
        iifname "$inside" accept
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "$inside" oifname "$outside" accept
    }
}
table ip chm_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "$outside" masquerade
    }
}
EOF
}

down() {
    for ns in "$@"; do
        ours "$ns"
        exists "$ns" || continue
        pids=$(ip netns pids "$ns" | tr '\n' ' ')
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            i=0
            while [ -n "$(ip netns pids "$ns")" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
            pids=$(ip netns pids "$ns" | tr '\n' ' ')
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns"
    done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    host) [ $# -eq 5 ] || die "usage: host NS INDEX NET DIR PUBKEY"; host "$@" ;;
    switch) [ $# -eq 1 ] || die "usage: switch SW"; switch "$@" ;;
    link) [ $# -eq 4 ] || die "usage: link SW NS SEGMENT ADDRESS"; link "$@" ;;
    route) [ $# -eq 3 ] || die "usage: route NS DESTINATION VIA"; route "$@" ;;
    nat) [ $# -eq 3 ] || die "usage: nat NS OUTSIDE INSIDE"; nat "$@" ;;
    down) down "$@" ;;
    *) die "usage: netns.sh host|switch|link|route|nat|down ..." ;;
esac
