package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govmm/govmm/kvm"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// Warm up the runtime's lazily created descriptors (netpoll) so the
	// fd-leak checks below compare like with like.
	if a, b, err := rawSocketPair(); err == nil {
		a.Close()
		b.Close()
	}
	os.Exit(m.Run())
}

func rawSocketPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1], nil
}

// socketPair returns two connected Unix stream sockets, closed at cleanup.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	a, b, err := rawSocketPair()
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read fd table: %v", err)
	}
	return len(ents)
}

// checkFDLeaks fails the test if the process holds more descriptors at the
// end of the test than at the call. Call it first, so its cleanup runs last.
func checkFDLeaks(t *testing.T) {
	t.Helper()
	before := countFDs(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for {
			after := countFDs(t)
			if after <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("descriptor leak: %d open before, %d after", before, after)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func newMemfd(t *testing.T, size int64) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("vhostuser-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatalf("truncate memfd: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// isClosed reports whether f was closed (by the code under test).
func isClosed(f *os.File) bool {
	return errors.Is(f.Close(), os.ErrClosed)
}

// fakeDevice is a Handler recording every call. It implements every
// optional interface.
type fakeDevice struct {
	mu       sync.Mutex
	calls    []string
	features uint64
	proto    ProtocolFeatures
	queues   uint64
	fail     map[string]error // method name -> error to return
	mem      *MemoryMap
	kick     map[uint32]*kvm.EventFD
	call     map[uint32]*kvm.EventFD
	errfd    map[uint32]*kvm.EventFD
	bases    map[uint32]uint32
	config   []byte
	status   uint8
	mtu      uint16
	rarp     net.HardwareAddr
	acked    uint64
	ackProto ProtocolFeatures
	addrs    map[uint32]VringAddr
	enabled  map[uint32]bool
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{
		features: 1<<32 | FeatureProtocolFeatures | 1<<5,
		proto:    SupportedProtocolFeatures | ProtocolLogSHMFD, // LOG_SHMFD must be masked by Serve
		queues:   4,
		fail:     map[string]error{},
		mem:      NewMemoryMap(),
		kick:     map[uint32]*kvm.EventFD{},
		call:     map[uint32]*kvm.EventFD{},
		errfd:    map[uint32]*kvm.EventFD{},
		bases:    map[uint32]uint32{},
		config:   []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		addrs:    map[uint32]VringAddr{},
		enabled:  map[uint32]bool{},
	}
}

func (d *fakeDevice) record(name string, args ...any) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := name
	if len(args) > 0 {
		s += fmt.Sprint(args...)
	}
	d.calls = append(d.calls, s)
	return d.fail[name]
}

func (d *fakeDevice) setFail(name string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail[name] = err
}

func (d *fakeDevice) callLog() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.calls, "\n")
}

func (d *fakeDevice) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range []map[uint32]*kvm.EventFD{d.kick, d.call, d.errfd} {
		for _, e := range m {
			e.Close()
		}
	}
	d.mem.Close()
}

func (d *fakeDevice) GetFeatures() (uint64, error) { return d.features, d.record("GetFeatures") }
func (d *fakeDevice) SetFeatures(f uint64) error {
	err := d.record("SetFeatures", f)
	d.mu.Lock()
	d.acked = f
	d.mu.Unlock()
	return err
}
func (d *fakeDevice) GetProtocolFeatures() (ProtocolFeatures, error) {
	return d.proto, d.record("GetProtocolFeatures")
}
func (d *fakeDevice) SetProtocolFeatures(p ProtocolFeatures) error {
	err := d.record("SetProtocolFeatures", uint64(p))
	d.mu.Lock()
	d.ackProto = p
	d.mu.Unlock()
	return err
}
func (d *fakeDevice) GetQueueNum() (uint64, error) { return d.queues, d.record("GetQueueNum") }
func (d *fakeDevice) SetOwner() error              { return d.record("SetOwner") }
func (d *fakeDevice) SetMemTable(regions []MemoryRegion, files []*os.File) error {
	if err := d.record("SetMemTable", len(regions)); err != nil {
		return err
	}
	return d.mem.SetTable(regions, files)
}
func (d *fakeDevice) SetVringNum(index, num uint32) error {
	return d.record("SetVringNum", index, " ", num)
}
func (d *fakeDevice) SetVringAddr(a VringAddr) error {
	d.mu.Lock()
	d.addrs[a.Index] = a
	d.mu.Unlock()
	return d.record("SetVringAddr", a.Index)
}
func (d *fakeDevice) SetVringBase(index, base uint32) error {
	d.mu.Lock()
	d.bases[index] = base
	d.mu.Unlock()
	return d.record("SetVringBase", index, " ", base)
}
func (d *fakeDevice) GetVringBase(index uint32) (uint32, error) {
	err := d.record("GetVringBase", index)
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bases[index] + 100, err
}
func (d *fakeDevice) setFD(m map[uint32]*kvm.EventFD, name string, index uint32, fd *kvm.EventFD) error {
	err := d.record(name, index, " ", fd != nil)
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := m[index]; old != nil {
		old.Close()
	}
	delete(m, index)
	if fd != nil {
		if err != nil {
			fd.Close()
			return err
		}
		m[index] = fd
	}
	return err
}
func (d *fakeDevice) SetVringKick(i uint32, fd *kvm.EventFD) error {
	return d.setFD(d.kick, "SetVringKick", i, fd)
}
func (d *fakeDevice) SetVringCall(i uint32, fd *kvm.EventFD) error {
	return d.setFD(d.call, "SetVringCall", i, fd)
}
func (d *fakeDevice) SetVringErr(i uint32, fd *kvm.EventFD) error {
	return d.setFD(d.errfd, "SetVringErr", i, fd)
}
func (d *fakeDevice) SetVringEnable(i uint32, on bool) error {
	d.mu.Lock()
	d.enabled[i] = on
	d.mu.Unlock()
	return d.record("SetVringEnable", i, " ", on)
}
func (d *fakeDevice) GetConfig(offset, size uint32) ([]byte, error) {
	if err := d.record("GetConfig", offset, " ", size); err != nil {
		return nil, err
	}
	if uint64(offset)+uint64(size) > uint64(len(d.config)) {
		return nil, errors.New("config window out of range")
	}
	return append([]byte(nil), d.config[offset:offset+size]...), nil
}
func (d *fakeDevice) SetConfig(offset uint32, data []byte, flags ConfigFlags) error {
	if err := d.record("SetConfig", offset, " ", data, " ", uint32(flags)); err != nil {
		return err
	}
	if uint64(offset)+uint64(len(data)) > uint64(len(d.config)) {
		return errors.New("config window out of range")
	}
	copy(d.config[offset:], data)
	return nil
}
func (d *fakeDevice) GetMaxMemSlots() (uint64, error) { return 32, d.record("GetMaxMemSlots") }
func (d *fakeDevice) AddMemReg(r MemoryRegion, f *os.File) error {
	if err := d.record("AddMemReg", r.GuestPhysAddr); err != nil {
		return err
	}
	return d.mem.Add(r, f)
}
func (d *fakeDevice) RemMemReg(r MemoryRegion) error {
	if err := d.record("RemMemReg", r.GuestPhysAddr); err != nil {
		return err
	}
	return d.mem.Remove(r)
}
func (d *fakeDevice) SetStatus(s uint8) error {
	d.mu.Lock()
	d.status = s
	d.mu.Unlock()
	return d.record("SetStatus", s)
}
func (d *fakeDevice) GetStatus() (uint8, error) {
	err := d.record("GetStatus")
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status, err
}
func (d *fakeDevice) ResetDevice() error { return d.record("ResetDevice") }
func (d *fakeDevice) SetMTU(mtu uint16) error {
	d.mu.Lock()
	d.mtu = mtu
	d.mu.Unlock()
	return d.record("SetMTU", mtu)
}
func (d *fakeDevice) SendRARP(mac net.HardwareAddr) error {
	d.mu.Lock()
	d.rarp = append(net.HardwareAddr(nil), mac...)
	d.mu.Unlock()
	return d.record("SendRARP", mac.String())
}

// minimalHandler implements only the mandatory Handler methods.
type minimalHandler struct{ d *fakeDevice }

func (m minimalHandler) GetFeatures() (uint64, error) { return m.d.GetFeatures() }
func (m minimalHandler) SetFeatures(f uint64) error   { return m.d.SetFeatures(f) }
func (m minimalHandler) GetProtocolFeatures() (ProtocolFeatures, error) {
	return m.d.GetProtocolFeatures()
}
func (m minimalHandler) SetProtocolFeatures(p ProtocolFeatures) error {
	return m.d.SetProtocolFeatures(p)
}
func (m minimalHandler) GetQueueNum() (uint64, error) { return m.d.GetQueueNum() }
func (m minimalHandler) SetOwner() error              { return m.d.SetOwner() }
func (m minimalHandler) SetMemTable(r []MemoryRegion, f []*os.File) error {
	return m.d.SetMemTable(r, f)
}
func (m minimalHandler) SetVringNum(i, n uint32) error               { return m.d.SetVringNum(i, n) }
func (m minimalHandler) SetVringAddr(a VringAddr) error              { return m.d.SetVringAddr(a) }
func (m minimalHandler) SetVringBase(i, b uint32) error              { return m.d.SetVringBase(i, b) }
func (m minimalHandler) GetVringBase(i uint32) (uint32, error)       { return m.d.GetVringBase(i) }
func (m minimalHandler) SetVringKick(i uint32, e *kvm.EventFD) error { return m.d.SetVringKick(i, e) }
func (m minimalHandler) SetVringCall(i uint32, e *kvm.EventFD) error { return m.d.SetVringCall(i, e) }
func (m minimalHandler) SetVringErr(i uint32, e *kvm.EventFD) error  { return m.d.SetVringErr(i, e) }
func (m minimalHandler) SetVringEnable(i uint32, on bool) error      { return m.d.SetVringEnable(i, on) }

// served is a Frontend connected over a socketpair to Serve running h.
type served struct {
	fe   *Frontend
	dev  *fakeDevice
	done chan error
}

// startServe connects a Frontend to Serve(h). At cleanup it closes the
// frontend and waits for Serve.
func startServe(t *testing.T, h Handler, dev *fakeDevice, opts Options) *served {
	t.Helper()
	a, b := socketPair(t)
	s := &served{fe: NewFrontend(a, opts), dev: dev, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { s.done <- Serve(ctx, b, h) }()
	t.Cleanup(func() {
		s.fe.Close()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after the front-end closed")
		}
		cancel()
		if dev != nil {
			dev.close()
		}
	})
	return s
}

// waitServe returns Serve's result.
func (s *served) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // keep it for cleanup
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// rawMessage builds wire bytes by hand.
func rawMessage(req Request, flags Flags, payload []byte) []byte {
	b := make([]byte, HeaderSize+len(payload))
	ne.PutUint32(b[0:], uint32(req))
	ne.PutUint32(b[4:], uint32(flags))
	ne.PutUint32(b[8:], uint32(len(payload)))
	copy(b[HeaderSize:], payload)
	return b
}

func u64Bytes(v uint64) []byte {
	b := make([]byte, 8)
	ne.PutUint64(b, v)
	return b
}

// sendRaw writes bytes with optional descriptors.
func sendRaw(t *testing.T, c *net.UnixConn, b []byte, files ...*os.File) {
	t.Helper()
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fd, err := fileFD(f)
			if err != nil {
				t.Fatal(err)
			}
			fds[i] = fd
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatalf("raw send: %v", err)
	}
}
