#!/bin/sh
# qemu-netdrv.sh: runs the netdrv tiny kernel under QEMU's microvm machine
# against a multi-queue TAP in a network namespace of its own, whose
# kernel IP stack answers ARP and ping. Checks 1 and 4 queue pairs, with
# interrupts (edge and level) and with polling, the microvm device probe
# without a command line, and (when python3 is present) reflect mode.
#
# Needs root, /dev/kvm, /dev/net/tun, ip(8) and qemu-system-x86_64.
# Environment: PINGS (per pair, default 10), QEMU (default
# qemu-system-x86_64), KEEP_GOING=1 (run every case even after a failure).
# Exit status: 0 if every case passed, 1 otherwise, 2 if it cannot run.
set -u

here=$(cd "$(dirname "$0")" && pwd)
kernel="$here/bin/netdrv.elf"
qemu=${QEMU:-qemu-system-x86_64}
pings=${PINGS:-10}
ns="govmm-netdrv-$$"
queues=4
refl_pid=

if [ "$(id -u)" != 0 ]; then
	echo "qemu-netdrv: needs root (network namespace, TAP)" >&2
	exit 2
fi
for tool in "$qemu" ip make; do
	command -v "$tool" >/dev/null 2>&1 || { echo "qemu-netdrv: $tool not found" >&2; exit 2; }
done
make -s -C "$here" >/dev/null || { echo "qemu-netdrv: build failed" >&2; exit 2; }

cleanup() {
	[ -n "$refl_pid" ] && kill "$refl_pid" 2>/dev/null
	ip netns del "$ns" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$ns" || exit 2
ip netns exec "$ns" sh -e -c '
	ip link set lo up
	ip tuntap add tap0 mode tap multi_queue vnet_hdr
	ip addr add 10.0.0.1/24 dev tap0
	ip link set tap0 up
' || exit 2

failed=0

# run NAME MACHINE EXPECT_PAIRS ARGS...: one QEMU boot; passes if QEMU
# exits with 1 (debug-exit value 0) and the summary line shows every reply.
run() {
	name=$1 machine=$2 want_pairs=$3
	shift 3
	start=$(date +%s%N)
	out=$(ip netns exec "$ns" timeout 60 "$qemu" -M "$machine" -accel kvm \
		-nodefaults -no-user-config -nographic -serial stdio -no-reboot \
		-device isa-debug-exit,iobase=0x501,iosize=1 \
		-global virtio-mmio.force-legacy=false \
		-netdev tap,id=n0,ifname=tap0,script=no,downscript=no,queues=$queues \
		-device virtio-net-device,netdev=n0,mq=on \
		-kernel "$kernel" -append "$*" 2>/dev/null)
	rc=$?
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	want="netdrv: pairs=$want_pairs sent=$((want_pairs * pings)) replies=$((want_pairs * pings))"
	summary=$(printf '%s\n' "$out" | tr -d '\r' | grep '^netdrv: pairs=')
	if [ "$rc" = 1 ] && [ "$summary" = "$want" ]; then
		echo "PASS $name (${ms} ms): $summary"
	else
		echo "FAIL $name (${ms} ms, qemu exit $rc, want \"$want\")"
		printf '%s\n' "$out" | sed 's/^/    /'
		failed=1
		[ "${KEEP_GOING:-0}" = 1 ] || exit 1
	fi
}

common="netdrv.ip=10.0.0.2/24 netdrv.peer=10.0.0.1 netdrv.pings=$pings netdrv.timeout=15000"
run "1 pair, interrupts"        microvm,acpi=off 1 "$common netdrv.pairs=1"
run "1 pair, polling"           microvm,acpi=off 1 "$common netdrv.pairs=1 netdrv.poll=1"
run "4 pairs, interrupts"       microvm,acpi=off 4 "$common netdrv.pairs=4"
run "4 pairs, level interrupts" microvm,acpi=off 4 "$common netdrv.pairs=4 netdrv.irq=level"
run "4 pairs, polling"          microvm,acpi=off 4 "$common netdrv.pairs=4 netdrv.poll=1"
run "4 pairs, microvm probe"    microvm          4 "$common"

# Reflect mode needs a reflector on the host side; the TAP steers frames
# it sends by its own flow table, so only one pair is checked here.
if command -v python3 >/dev/null 2>&1; then
	fifo="$(mktemp -u)"
	mkfifo "$fifo"
	ip netns exec "$ns" python3 -c '
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("tap0", 0x88b5))
print("ready", flush=True)
while True:
    f, addr = s.recvfrom(65535)
    if addr[2] != socket.PACKET_OUTGOING:
        s.send(f[6:12] + f[0:6] + f[12:])
' >"$fifo" &
	refl_pid=$!
	read -r ready <"$fifo"
	rm -f "$fifo"
	if [ "$ready" = ready ]; then
		run "1 pair, reflect" microvm,acpi=off 1 "netdrv.mode=reflect netdrv.pings=$pings netdrv.pairs=1 netdrv.timeout=15000"
	else
		echo "SKIP reflect: reflector did not start"
	fi
else
	echo "SKIP reflect: python3 not found"
fi

exit $failed
