#!/bin/sh
# udhcpc event script: configure the leased address on the interface.
case "$1" in
bound | renew)
	ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
	;;
esac
exit 0
