#!/usr/bin/env bash
# Installs the independent peers and decoders the IKE tests run against, on Debian 12:
#   strongSwan 5.9.8 (Debian: charon, swanctl, kernel-libipsec in libcharon-extra-plugins),
#   tshark (no setuid dumpcap), tcpdump, iperf3;
#   strongSwan 6.0.6 built from SHARED/peers/ into /opt/strongswan6 when that source exists.
# Installing strongSwan must not leave a system charon holding UDP 500/4500 in the root
# namespace: while apt runs, a policy-rc.d of ours (only if there is none) refuses service
# starts, and on a systemd machine the units the packages ship are disabled and stopped by
# name afterwards. Idempotent: does nothing when everything is there.
# usage: install-peers.sh [SHARED_DIR]
set -euo pipefail
shared=${1:-}
# libstrongswan-standard-plugins (openssl, gcm, curve25519) is only a Recommends of libstrongswan
packages="strongswan-charon strongswan-swanctl libstrongswan-standard-plugins libcharon-extra-plugins
  tshark tcpdump iperf3"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  guard=/usr/sbin/policy-rc.d
  made_guard=""
  if [ ! -e "$guard" ]; then  # ours: removed below, an existing one is left alone
    printf '#!/bin/sh\n# install-peers.sh: no service starts while it installs\nexit 101\n' \
      > "$guard"
    chmod 755 "$guard"
    made_guard=1
  fi
  trap 'if [ -n "$made_guard" ]; then rm -f "$guard"; fi' EXIT
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 $missing
  if [ -d /run/systemd/system ]; then  # units these packages ship, by name only
    for unit in strongswan-starter.service strongswan.service ipsec.service; do
      if systemctl list-unit-files "$unit" 2>/dev/null | grep -q "^$unit"; then
        systemctl disable --now "$unit" || true
      fi
    done
  fi
fi
for plugin in kernel-libipsec openssl gcm vici; do
  so=/usr/lib/ipsec/plugins/libstrongswan-$plugin.so
  [ -f "$so" ] || { echo "install-peers.sh: $so is missing after the install" >&2; exit 1; }
done
if [ -n "$shared" ] && [ -x "$shared/peers/build-strongswan6.sh" ]; then
  if [ ! -f /opt/strongswan6/.built-6.0.6 ]; then
    echo "building strongSwan 6.0.6 into /opt/strongswan6 (about two minutes)"
    start=$(date +%s)
    "$shared/peers/build-strongswan6.sh" /opt/strongswan6
    echo "strongSwan 6.0.6 built in $(( $(date +%s) - start )) s"
  fi
else
  echo "strongSwan 6.0.6: no build script under '${shared:-(no shared dir)}'; its tests skip"
fi
