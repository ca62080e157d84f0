#!/usr/bin/env bash
# Emulated Raspberry Pi (aarch64) for CORRECTNESS runs on an x86_64 Debian 12 host, as root: an arm64 Debian rootfs
# run under qemu-user with a faked Pi 4 (QEMU_CPU=cortex-a72) or Pi 5 (cortex-a76, default) CPU. It proves that the
# slim runtime installs from PyPI aarch64 wheels and gives the x86 numbers; it says nothing about speed (emulation is
# ~400-800x slower than native: tiny models only, never timings) nor about GPUs/NPUs.
#
# Usage:  scripts/emulated-pi.sh WORK_DIR "PIP ARGS" COMMAND...
#   WORK_DIR    a host directory bind-mounted at /mnt/work inside (packages, wheels, scripts)
#   PIP ARGS    installed into the venv /opt/venv of the rootfs ("" for none); may name files under /mnt/work and
#               "-c /mnt/work/constraints.txt". Skipped when the same string was installed before (warm runs).
#   PI_ROOTFS   env: where the rootfs lives (default: .cache/pi-rootfs in the checkout; built once, ~5 min)
#   QEMU_CPU    env: cortex-a76 (Pi 5, default) or cortex-a72 (Pi 4: no dot-product ISA)
# Exit 77 (the automake "skip" code) when this host cannot emulate at all (not root, no binfmt_misc, no qemu); any
# other failure is a real one.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=$(realpath "$1"); PKGS=$2; shift 2
R=$(realpath -m "${PI_ROOTFS:-$REPO/.cache/pi-rootfs}")
CPU=${QEMU_CPU:-cortex-a76}
skip() { echo "emulated-pi: cannot emulate on this host: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (chroot, mounts, binfmt_misc)"
MIRROR=${MIRROR:-$(grep -rhoE '^(URIs:|deb) *https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
          | head -1 | grep -oE 'https?://[^ ]*' || true)}
# 1) host tools; qemu-user-static registers its binfmt entry with the F flag, so the interpreter works in the chroot
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || skip "no qemu-aarch64-static/debootstrap and no apt-get to install them"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap; } \
    >&2 || skip "could not install qemu-user-static/debootstrap"
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
  || skip "binfmt_misc is not available (kernel module or container permissions)"
update-binfmts --enable qemu-aarch64 >&2 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || skip "no qemu-aarch64 binfmt entry after update-binfmts"
# 2) arm64 rootfs with python3 (debootstrap's second stage already runs under qemu). Built into a temporary
#    directory and renamed, so an interrupted build is never mistaken for a cached rootfs.
if [ ! -x "$R/usr/bin/python3" ]; then
  rm -rf "$R.partial"; mkdir -p "$(dirname "$R")"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$R.partial" ${MIRROR:+"$MIRROR"} >&2
  rm -rf "$R"; mv "$R.partial" "$R"
fi
cp /etc/resolv.conf "$R/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/host-ca-bundle.crt"   # for a TLS-intercepting proxy
# 3) fake CPU topology matching QEMU_CPU. Without it cpuinfo init fails and XNNPACK is silently off; with the host's
#    real /sys, onnxruntime and ai-edge-litert segfault at import; a cpuinfo claiming more ISA than the emulated CPU
#    (asimddp on cortex-a72) gives SIGILL. The Model line is what mmedge.devices.detect reads to name the board.
if [ "$CPU" = cortex-a72 ]; then PART=0xd08; VAR=0x0; REV=3; FREQ=1800000; FEAT="fp asimd evtstrm crc32 cpuid"
  HW=BCM2711; MODEL="Raspberry Pi 4 Model B Rev 1.4"
elif [ "$CPU" = cortex-a76 ]; then PART=0xd0b; VAR=0x4; REV=1; FREQ=2400000
  FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
  HW=BCM2712; MODEL="Raspberry Pi 5 Model B Rev 1.0"
else echo "emulated-pi: QEMU_CPU must be cortex-a72 (Pi 4) or cortex-a76 (Pi 5), not $CPU" >&2; exit 2; fi
F=$(dirname "$R")/fakesys-$CPU; N=$(nproc); rm -rf "$F"; mkdir -p "$F/cpu"
echo "0-$((N-1))" | tee "$F/cpu/possible" "$F/cpu/present" "$F/cpu/online" >/dev/null
: > "$F/cpuinfo"
for i in $(seq 0 $((N-1))); do
  mkdir -p "$F/cpu/cpu$i/cpufreq"; echo $FREQ > "$F/cpu/cpu$i/cpufreq/cpuinfo_max_freq"
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
    "$i" "$FEAT" $VAR $PART $REV >> "$F/cpuinfo"
done
printf 'Hardware\t: %s\nModel\t\t: %s\n' $HW "$MODEL" >> "$F/cpuinfo"
cleanup() { for m in "$R/proc/cpuinfo" "$R/sys/devices/system/cpu" "$R/mnt/work" "$R/proc"; do
              mountpoint -q "$m" && umount "$m"; done; true; }
trap cleanup EXIT
mkdir -p "$R/proc" "$R/mnt/work" "$R/sys/devices/system/cpu"
mountpoint -q "$R/proc" || mount -t proc proc "$R/proc"
mountpoint -q "$R/mnt/work" || mount --bind "$W" "$R/mnt/work"
mountpoint -q "$R/sys/devices/system/cpu" || mount --bind "$F/cpu" "$R/sys/devices/system/cpu"
mount --bind "$F/cpuinfo" "$R/proc/cpuinfo"
# 4) venv + aarch64 wheels; env -i drops the host's pip settings. pip under emulation takes minutes even when all
#    is installed, so the last installed argument string is remembered and not reinstalled.
RUN="chroot $R /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root QEMU_CPU=$CPU PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt"
STAMP=$R/opt/venv/.installed-pip-args
[ -x "$R/opt/venv/bin/python" ] || $RUN python3 -m venv /opt/venv
if [ -n "$PKGS" ] && [ "$(cat "$STAMP" 2>/dev/null)" != "$PKGS" ]; then
  # shellcheck disable=SC2086  # PIP ARGS is a word list on purpose
  $RUN /opt/venv/bin/pip install -q --disable-pip-version-check $PKGS >&2
  printf '%s' "$PKGS" > "$STAMP"
fi
# 5) the command
$RUN "$@"
