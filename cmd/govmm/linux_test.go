package main

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

// linuxBootTimeout bounds one Linux boot. On hosts that emulate guest
// kernel code a boot to init takes 20-40 s (the bzImage decompresses
// itself first); natively it takes well under a second.
const linuxBootTimeout = 5 * time.Minute

// bootLinux runs govmm on a Linux kernel (in ns when not nil) and returns
// its console, its stderr and its exit status.
func bootLinux(t *testing.T, ns *testutil.NetNS, args ...string) (console, logs string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), linuxBootTimeout)
	defer cancel()
	cmd := govmmCommand(t, ns, append([]string{"run", "--log-level", "info"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("Linux did not finish within %v; console tail:\n%s\nstderr:\n%s", linuxBootTimeout, tail(out.String(), 30), errOut.String())
	}
	code = 0
	// The serial console ends lines with CRLF.
	console = strings.ReplaceAll(out.String(), "\r\n", "\n")
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return console, errOut.String(), code
}

// checkBoot fails t unless console holds every line of wants and govmm
// exited 0, and then shows the end of the console.
func checkBoot(t *testing.T, console, logs string, code int, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if code != 0 {
		t.Errorf("govmm exited %d; stderr:\n%s", code, logs)
	}
	if t.Failed() {
		t.Logf("console tail:\n%s", tail(console, 40))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// passedCmdline is the command line govmm logged it gave the guest.
var passedCmdline = regexp.MustCompile(`msg="machine ready".* cmdline="([^"]*)"`)

// TestLinuxToInitWithDHCP boots the project's Linux (vmlinux and bzImage)
// with a virtio-net device on a TAP in a namespace served by dnsmasq, and
// checks what the kernel does before init: the banner, the exact command
// line govmm passed, the DHCP lease the server handed out, "Run /init",
// and that govmm exits cleanly when the guest resets (panic=-1 reboot=t:
// init cannot run on hosts that emulate guest kernel code).
func TestLinuxToInitWithDHCP(t *testing.T) {
	testutil.RequireKVM(t)
	vmlinux, bzImage := testutil.LinuxKernel(t)
	for _, k := range []struct{ name, path string }{{"vmlinux", vmlinux}, {"bzImage", bzImage}} {
		t.Run(k.name, func(t *testing.T) {
			ns := testutil.NewNetNS(t)
			ns.AddTAP(t, "tap0", "10.0.0.1/24")
			ns.StartDHCP(t, "tap0", "10.0.0.2")
			const cmdline = "console=ttyS0 ip=dhcp panic=-1 reboot=t"
			// Exactly the command a user runs: the kernel carries its
			// initramfs, so no --initrd.
			console, logs, code := bootLinux(t, ns, "--kernel", k.path, "--memory", "256M",
				"--net", "tap=tap0", "--cmdline", cmdline)
			m := passedCmdline.FindStringSubmatch(logs)
			if m == nil {
				t.Fatalf("govmm did not log the command line it passed; stderr:\n%s", logs)
			}
			if !strings.HasPrefix(m[1], cmdline) || !strings.Contains(m[1], "virtio_mmio.device=4K@0xd0000000:5") {
				t.Errorf("passed command line %q lacks the user's or the device's part", m[1])
			}
			for _, want := range []string{
				"Linux version 6.1",
				"Command line: " + m[1] + "\n",
				"virtio-mmio: Registering device virtio-mmio.0 at 0xd0000000-0xd0000fff, IRQ 5.",
				"IP-Config: Got DHCP answer from 10.0.0.1, my address is 10.0.0.2",
				"IP-Config: Complete:",
				"device=eth0",
				"ipaddr=10.0.0.2",
				"Run /init as init process",
			} {
				if !strings.Contains(console, want) {
					t.Errorf("console lacks %q", want)
				}
			}
			if code != 0 || !strings.Contains(logs, "guest reset") {
				t.Errorf("govmm exited %d, want 0 after the guest's reset; stderr:\n%s", code, logs)
			}
			if t.Failed() {
				t.Logf("console tail:\n%s", tail(console, 40))
			}
		})
	}
}

// TestLinuxSMP boots Linux on two vCPUs: it must find both in the MP
// table, start the second with INIT/SIPI through the in-kernel LAPIC, and
// see them as two cores of one package (CPUID topology consistent with
// --cpus).
func TestLinuxSMP(t *testing.T) {
	testutil.RequireKVM(t)
	vmlinux, _ := testutil.LinuxKernel(t)
	console, logs, code := bootLinux(t, nil, "--kernel", vmlinux, "--initrd", testutil.LinuxInitramfs(t),
		"--memory", "256M", "--cpus", "2", "--cmdline", "console=ttyS0 panic=-1 reboot=t")
	if strings.Contains(console, "Max logical packages: 2") {
		t.Errorf("Linux sees two packages, want two cores of one")
	}
	checkBoot(t, console, logs, code,
		"smpboot: Allowing 2 CPUs",
		"smp: Brought up 1 node, 2 CPUs",
		"Freeing initrd memory:", // the --initrd was loaded and unpacked
		"Run /init as init process")
}

// TestLinuxUserSpace is the full boot: the initramfs's init brings up
// eth0, pings the host over virtio-net, reports the CPU count and reboots,
// and govmm exits 0. It needs a host whose KVM runs guest kernel code
// natively.
func TestLinuxUserSpace(t *testing.T) {
	testutil.RequireNativeSupervisor(t)
	vmlinux, _ := testutil.LinuxKernel(t)
	ns := testutil.NewNetNS(t)
	ns.AddTAP(t, "tap0", "10.0.0.1/24")
	ns.StartDHCP(t, "tap0", "10.0.0.2")
	console, logs, code := bootLinux(t, ns, "--kernel", vmlinux,
		"--memory", "256M", "--cpus", "2", "--net", "tap=tap0", "--cmdline", "console=ttyS0 ip=dhcp panic=-1 reboot=t")
	checkBoot(t, console, logs, code, "initramfs: ping 10.0.0.1 ok", "initramfs: cpus=2")
}

// TestLinuxDHCPOverVhostUser is the DHCP boot with the packets moved by a
// separate `govmm vhost-user-net` process instead of the VMM: the
// notifiers go through the vhost attach path, the backend maps the
// guest's memory from the memfd the VMM shares.
func TestLinuxDHCPOverVhostUser(t *testing.T) {
	testutil.RequireKVM(t)
	vmlinux, _ := testutil.LinuxKernel(t)
	ns := testutil.NewNetNS(t)
	ns.AddTAP(t, "tap0", "10.0.0.1/24")
	ns.StartDHCP(t, "tap0", "10.0.0.2")
	sock := t.TempDir() + "/vu.sock"
	backend := govmmCommand(t, ns, "vhost-user-net", "--socket", sock, "--tap", "tap0", "--queues", "2")
	var blog bytes.Buffer
	backend.Stdout, backend.Stderr = &blog, &blog
	if err := backend.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		backend.Process.Kill()
		backend.Wait()
		if t.Failed() {
			t.Logf("backend log:\n%s", blog.String())
		}
	})
	const cmdline = "console=ttyS0 ip=dhcp panic=-1 reboot=t"
	console, logs, code := bootLinux(t, ns, "--kernel", vmlinux, "--memory", "256M",
		"--net", "vhost-user="+sock+",queues=2", "--stats", "--cmdline", cmdline)
	if !strings.Contains(logs, "net0: notifiers=") || !strings.Contains(logs, "attach_commits=1") {
		t.Errorf("no vhost stats line with one attach commit; stderr:\n%s", logs)
	}
	checkBoot(t, console, logs, code,
		"IP-Config: Got DHCP answer from 10.0.0.1, my address is 10.0.0.2",
		"Run /init as init process")
}
