#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks: Debian packages (as root, with
# --no-install-recommends) and Node 22 from the npm registry (scripts/node22.sh).
#   install-deps.sh          everything the tests use (scripts/test.sh)
#   install-deps.sh --demo   only what scripts/demo.sh uses: Mosquitto and its clients, and the
#                            compiler for better-sqlite3 when app/node_modules is not there yet
set -eu
DEMO_PKGS=(
  ca-certificates
  mosquitto mosquitto-clients                              # the broker the image ships, devices
)
TEST_PKGS=(
  openssl git python3 make g++
  libcoap3-bin                                             # coap-client-notls as a CoAP device
  nftables iproute2 wireguard-go wireguard-tools           # firewall and tunnel in network namespaces
  systemd                                                  # systemd-analyze verify for the units
  qemu-user-static g++-aarch64-linux-gnu libc6-dev-arm64-cross   # the arm64 run under emulation
  g++-arm-linux-gnueabihf libc6-dev-armhf-cross            # the 32-bit Pi's addon: a compile check
  util-linux procps                                        # setpriv, sysctl (namespace tests)
  fdisk e2fsprogs                                          # sfdisk, resize2fs: growing /data on a loop device
  dropbear-bin openssh-client                              # the image's SSH server, probed by a real client
  hostapd                                                  # the IoT LAN access point: its parser checks the generated configuration
  strace                                                   # fsync order of atomic file writes; fsyncs in npm run bench
  python3-jsonschema python3-yaml                          # kas files against kas's schema
  mtools                                                   # flash.sh --provision: the boot partition written without mounting
  faketime libfaketime                                     # broker/gateway with the clock behind (LD_PRELOAD + FAKETIME)
  mmdebstrap arch-test binfmt-support qemu-system-arm      # the arm64 stand-in (scripts/standin.sh)
  python3-pexpect                                          # oe-core's serial target for the oeqa cases on the stand-in
  chromium                                                 # the console in a real headless browser (playwright-core)
  shellcheck                                               # lints scripts/*.sh and the layer's shell files
)
if [ "${1:-}" = --demo ]; then
  PKGS=("${DEMO_PKGS[@]}")
  # npm ci may have to compile better-sqlite3 (no prebuilt binary for this platform)
  [ -d "$(dirname "$0")/../app/node_modules/better-sqlite3" ] || PKGS+=(python3 make g++)
else
  PKGS=("${DEMO_PKGS[@]}" "${TEST_PKGS[@]}")
fi
missing=()
for p in "${PKGS[@]}"; do
  case "$p" in \#*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2; exit 1
    fi
  else SUDO=; fi
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # policy-rc.d: packages must not start their daemons here (the tests start their own).
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$(dirname "$0")/node22.sh" >/dev/null
