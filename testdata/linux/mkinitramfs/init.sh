#!/bin/sh
# /init of govmm's test initramfs: run by busybox sh as process 1. It checks
# the network path to the host (10.0.0.1), reports on the console and reboots;
# with reboot=t and panic=-1 on the kernel command line the VM then ends.
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

ip link set lo up
ip link set eth0 up
# The kernel's own DHCP client (ip=dhcp) usually configured eth0 already.
if ! ip -4 addr show dev eth0 | grep -q 'inet '; then
	udhcpc -i eth0 -n -q -t 3 -s /etc/udhcpc.sh >/dev/null 2>&1
fi

if ping -c 3 -w 10 10.0.0.1 >/dev/null 2>&1; then
	echo "initramfs: ping 10.0.0.1 ok"
else
	echo "initramfs: ping 10.0.0.1 failed"
fi
echo "initramfs: cpus=$(grep -c '^processor' /proc/cpuinfo)"

reboot -f
