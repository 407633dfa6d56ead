#!/bin/sh
# Builds the Linux 6.1 guest kernel used by govmm's boot tests.
#
# The source is Debian's linux-source-6.1 tarball. It is unpacked and built
# in a cache directory outside the repository, keyed by the source version
# and a hash of config.fragment and this script, so a second run with the same
# inputs only refreshes the out/ symlinks.
#
# Environment:
#   GOVMM_LINUX_CACHE    base cache directory
#                        (default: ${XDG_CACHE_HOME:-$HOME/.cache}/govmm)
#   GOVMM_LINUX_TARBALL  Linux source tarball to use instead of the one
#                        installed by Debian's linux-source-6.1 package
#   GOVMM_LINUX_INITRAMFS an uncompressed cpio to build into the kernel
#                        (CONFIG_INITRAMFS_SOURCE); part of the cache key
#
# Results: out/bzImage and out/vmlinux, symlinks into the cache.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/config.fragment
out=$here/out
pkg=linux-source-6.1
builddeps="flex bison bc libelf-dev libssl-dev"

say() { printf 'linux: %s\n' "$*"; }
die() { printf 'linux: error: %s\n' "$*" >&2; exit 1; }

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt_install installs those of the named Debian packages that are missing.
# If an apt or dpkg run is already going (for example one installing these
# very packages), it waits for that to finish and checks again rather than
# competing with it.
apt_busy() {
	command -v pgrep >/dev/null || return 1
	pgrep -x apt-get >/dev/null || pgrep -x apt >/dev/null || pgrep -x dpkg >/dev/null
}

apt_install() {
	waited=0
	while apt_busy; do
		[ "$waited" = 0 ] && say "waiting for a running apt-get/dpkg to finish"
		waited=$((waited + 5))
		[ "$waited" -le 1800 ] || die "apt-get/dpkg still running after 30 minutes"
		sleep 5
	done
	missing=
	for p in "$@"; do installed "$p" || missing="$missing $p"; done
	[ -n "$missing" ] || return 0
	[ "$(id -u)" = 0 ] || die "missing packages:$missing; install them (apt-get install$missing) or run as root"
	command -v apt-get >/dev/null || die "missing packages:$missing, and no apt-get to install them"
	say "installing$missing"
	lock="-o DPkg::Lock::Timeout=900"
	# shellcheck disable=SC2086
	if ! DEBIAN_FRONTEND=noninteractive apt-get $lock install -y -q $missing >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get $lock update -q >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get $lock install -y -q $missing >/dev/null
	fi
}

have_dpkg() { command -v dpkg-query >/dev/null; }

# Locate the source tarball and name its version.
if [ -n "${GOVMM_LINUX_TARBALL:-}" ]; then
	tarball=$GOVMM_LINUX_TARBALL
	version=$(basename "$tarball" | sed 's/\.tar\.[a-z0-9]*$//; s/^linux-source-//; s/^linux-//')
else
	have_dpkg || die "no dpkg: set GOVMM_LINUX_TARBALL to a Linux 6.1 source tarball"
	# shellcheck disable=SC2086
	installed "$pkg" || apt_install "$pkg" $builddeps
	tarball=$(dpkg -L "$pkg" | grep "/$pkg\.tar\.[a-z0-9]*\$" | head -n 1)
	version=$(dpkg-query -W -f='${Version}' "$pkg")
fi
[ -f "$tarball" ] || die "source tarball not found: ${tarball:-none in package $pkg}"

initramfs=${GOVMM_LINUX_INITRAMFS:-}
if [ -n "$initramfs" ]; then
	[ -f "$initramfs" ] || die "initramfs not found: $initramfs"
fi
hash=$(cat "$fragment" "$here/build.sh" ${initramfs:+"$initramfs"} | sha256sum | cut -c1-12)
if [ -z "${GOVMM_LINUX_CACHE:-}${XDG_CACHE_HOME:-}${HOME:-}" ]; then
	die "no cache directory: set GOVMM_LINUX_CACHE"
fi
base=${GOVMM_LINUX_CACHE:-${XDG_CACHE_HOME:-${HOME:-}/.cache}/govmm}
cache=$base/linux-$version-$hash
src=$cache/src
stamp=$cache/built.stamp
mkdir -p "$cache" "$out"

link_outputs() {
	ln -sfn "$src/arch/x86/boot/bzImage" "$out/bzImage"
	ln -sfn "$src/vmlinux" "$out/vmlinux"
}

# One build per cache directory at a time.
exec 9>"$cache/lock"
if command -v flock >/dev/null; then flock 9; fi

if [ -f "$stamp" ] && [ -f "$src/vmlinux" ] && [ -f "$src/arch/x86/boot/bzImage" ]; then
	link_outputs
	say "cached build $cache"
	exit 0
fi

start=$(date +%s)
say "building Linux $version from $tarball"
# Build dependencies: checked through dpkg where there is one; elsewhere
# make reports what is missing.
# shellcheck disable=SC2086
if have_dpkg; then apt_install $builddeps; fi
say "cache $cache"

if [ ! -f "$src/Makefile" ]; then
	say "unpacking source"
	rm -rf "$src" "$src.tmp"
	mkdir -p "$src.tmp"
	tar -xf "$tarball" -C "$src.tmp" --strip-components=1
	mv "$src.tmp" "$src"
fi

cd "$src"
export ARCH=x86_64
# A fixed builder name and build number keep the banner stable across hosts.
export KBUILD_BUILD_USER=govmm KBUILD_BUILD_HOST=govmm KBUILD_BUILD_VERSION=1
log=$cache/build.log
: >"$log"

run() {
	if ! "$@" >>"$log" 2>&1; then
		tail -n 40 "$log" >&2
		die "failed: $* (full log: $log)"
	fi
}

say "configuring: tinyconfig + $(basename "$fragment")"
run make tinyconfig
# -n: symbols the fragment makes visible but does not name default to "no",
# the way tinyconfig itself is built, so the kernel stays small.
run scripts/kconfig/merge_config.sh -n .config "$fragment"

# Every line of the fragment must have landed as written.
bad=0
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		sym=${line%%=*}
		if ! grep -qxF -- "$line" .config; then
			got=$(grep -E "^$sym=|^# $sym is not set" .config || echo "absent")
			printf 'linux: config: want %s, got %s\n' "$line" "$got" >&2
			bad=1
		fi
		;;
	"# CONFIG_"*" is not set")
		sym=${line#"# "}
		sym=${sym%" is not set"}
		if got=$(grep -E "^$sym=" .config); then
			printf 'linux: config: want %s unset, got %s\n' "$sym" "$got" >&2
			bad=1
		fi
		;;
	esac
done <"$fragment"
[ "$bad" = 0 ] || die "config fragment not applied (dependencies missing?)"

if [ -n "$initramfs" ]; then
	# A private copy: the cache key covers its contents, and the kernel
	# build reads it by path.
	cp "$initramfs" "$cache/initramfs.cpio"
	say "built-in initramfs: $(basename "$initramfs")"
	run scripts/config --set-str INITRAMFS_SOURCE "$cache/initramfs.cpio"
	run make olddefconfig
	grep -qxF "CONFIG_INITRAMFS_SOURCE=\"$cache/initramfs.cpio\"" .config || die "CONFIG_INITRAMFS_SOURCE not set"
	grep -qxF "CONFIG_INITRAMFS_COMPRESSION_NONE=y" .config || die "built-in initramfs would be compressed"
fi

jobs=$(nproc 2>/dev/null || echo 2)
say "compiling bzImage and vmlinux with -j$jobs (log: $log)"
run make -j"$jobs" bzImage vmlinux

date +%s >"$stamp"
link_outputs
say "done in $(($(date +%s) - start)) s: $out/bzImage $out/vmlinux"
# Builds for other configs are left alone (another checkout may use them);
# point them out, since each takes about 1.5 GB.
for old in "$base"/linux-*; do
	[ -d "$old" ] && [ "$old" != "$cache" ] && say "note: older build $old can be removed"
done
exit 0
