#!/usr/bin/env bash
# Installs the Debian packages the tests and benches use; idempotent and non-interactive.
# tshark decodes our captures; opensm, ibsim-utils and infiniband-diags are the reference SM,
# simulator and diagnostics we compare against; iproute2, iperf3 and iputils-ping are the kernel-side
# tools the --netns tests run over IPoIB.
set -euo pipefail
PKGS=(tshark opensm ibsim-utils infiniband-diags iproute2 iperf3 iputils-ping ethtool)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
