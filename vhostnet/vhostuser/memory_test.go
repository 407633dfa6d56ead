package vhostuser

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"
)

// twoRegionMap maps guest [0x0, 0x2000) and [0x10000, 0x11000) from one
// memfd (file offsets 0 and 0x2000), user addresses 0x4000_0000 and
// 0x5000_0000. Byte i of the file holds i%251.
func twoRegionMap(t *testing.T) (*MemoryMap, *os.File) {
	t.Helper()
	f := newMemfd(t, 0x3000)
	pattern := make([]byte, 0x3000)
	for i := range pattern {
		pattern[i] = byte(i % 251)
	}
	if _, err := f.WriteAt(pattern, 0); err != nil {
		t.Fatal(err)
	}
	m := NewMemoryMap()
	t.Cleanup(func() { m.Close() })
	err := m.SetTable([]MemoryRegion{
		{GuestPhysAddr: 0x10000, Size: 0x1000, UserAddr: 0x5000_0000, MmapOffset: 0x2000},
		{GuestPhysAddr: 0, Size: 0x2000, UserAddr: 0x4000_0000, MmapOffset: 0},
	}, []*os.File{f, f})
	if err != nil {
		t.Fatalf("SetTable: %v", err)
	}
	return m, f
}

func TestMemoryMapTranslate(t *testing.T) {
	checkFDLeaks(t)
	m, _ := twoRegionMap(t)
	v := m.Acquire()
	defer v.Release()
	tests := []struct {
		name      string
		user      bool
		addr, n   uint64
		fileOff   int // expected file offset of the first byte; -1 = error
		wantBytes int
	}{
		{"guest start", false, 0, 16, 0, 16},
		{"guest inside", false, 0x1ff0, 16, 0x1ff0, 16},
		{"guest crosses end of region", false, 0x1ff0, 17, -1, 0},
		{"guest gap", false, 0x2000, 1, -1, 0},
		{"guest second region", false, 0x10010, 4, 0x2010, 4},
		{"guest second region last byte", false, 0x10fff, 1, 0x2fff, 1},
		{"guest past everything", false, 0x11000, 1, -1, 0},
		{"guest huge length", false, 0x10, ^uint64(0), -1, 0},
		{"guest top of address space", false, ^uint64(0), 1, -1, 0},
		{"zero length", false, 0x10, 0, 0x10, 0},
		{"user first region", true, 0x4000_0100, 8, 0x100, 8},
		{"user second region", true, 0x5000_0ff8, 8, 0x2ff8, 8},
		{"user crosses end", true, 0x5000_0ff8, 9, -1, 0},
		{"user unmapped", true, 0x4500_0000, 1, -1, 0},
		{"user just below", true, 0x3fff_ffff, 1, -1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			var err error
			if tc.user {
				b, err = v.UserSlice(tc.addr, tc.n)
			} else {
				b, err = v.GuestSlice(tc.addr, tc.n)
			}
			if tc.fileOff < 0 {
				if !errors.Is(err, ErrNoMemory) {
					t.Fatalf("got %d bytes, err %v; want ErrNoMemory", len(b), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tc.wantBytes || cap(b) != tc.wantBytes {
				t.Fatalf("len %d cap %d, want %d", len(b), cap(b), tc.wantBytes)
			}
			for i := range b {
				if want := byte((tc.fileOff + i) % 251); b[i] != want {
					t.Fatalf("byte %d = %d, want %d", i, b[i], want)
				}
			}
		})
	}
	if g, err := v.UserToGuest(0x5000_0010); err != nil || g != 0x10010 {
		t.Errorf("UserToGuest = %#x, %v", g, err)
	}
	if _, err := v.UserToGuest(0x10); !errors.Is(err, ErrNoMemory) {
		t.Errorf("UserToGuest of unmapped address: %v", err)
	}
}

func TestMemoryMapWritesReachTheFile(t *testing.T) {
	checkFDLeaks(t)
	m, f := twoRegionMap(t)
	if err := m.WriteGuest(0x10020, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := f.ReadAt(got, 0x2020); err != nil || string(got) != "hello" {
		t.Fatalf("file has %q, %v", got, err)
	}
	if err := m.ReadGuest(0x1fff, make([]byte, 2)); !errors.Is(err, ErrNoMemory) {
		t.Errorf("read across a region end: %v", err)
	}
}

func TestMemoryMapRejects(t *testing.T) {
	checkFDLeaks(t)
	small := newMemfd(t, 0x1000)
	big := newMemfd(t, 0x10000)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	r := func(gpa, size, uva, off uint64) MemoryRegion {
		return MemoryRegion{GuestPhysAddr: gpa, Size: size, UserAddr: uva, MmapOffset: off}
	}
	tests := []struct {
		name    string
		regions []MemoryRegion
		files   []*os.File
	}{
		{"count mismatch", []MemoryRegion{r(0, 0x1000, 0, 0)}, nil},
		{"file too small", []MemoryRegion{r(0, 0x2000, 0, 0)}, []*os.File{small}},
		{"offset beyond file", []MemoryRegion{r(0, 0x1000, 0, 0x1000)}, []*os.File{small}},
		{"not a regular file", []MemoryRegion{r(0, 0x1000, 0, 0)}, []*os.File{pr}},
		{"nil file", []MemoryRegion{r(0, 0x1000, 0, 0)}, []*os.File{nil}},
		{"size 0", []MemoryRegion{r(0, 0, 0, 0)}, []*os.File{small}},
		{"guest overlap", []MemoryRegion{r(0, 0x2000, 0, 0), r(0x1000, 0x1000, 0x10000, 0)}, []*os.File{big, big}},
		{"user overlap", []MemoryRegion{r(0, 0x1000, 0x1000, 0), r(0x10000, 0x1000, 0x1800, 0)}, []*os.File{big, big}},
		{"overflowing range", []MemoryRegion{r(^uint64(0)-0xfff, 0x2000, 0, 0)}, []*os.File{big}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemoryMap()
			defer m.Close()
			if err := m.SetTable(tc.regions, tc.files); err == nil {
				t.Fatal("SetTable accepted the table")
			}
			if n := len(m.Regions()); n != 0 {
				t.Errorf("%d regions mapped after a failed SetTable", n)
			}
		})
	}
}

func TestMemoryMapAddRemoveReplace(t *testing.T) {
	checkFDLeaks(t)
	m, _ := twoRegionMap(t)
	extra := newMemfd(t, 0x1000)
	if err := extra.Truncate(0x1000); err != nil {
		t.Fatal(err)
	}
	add := MemoryRegion{GuestPhysAddr: 0x8000, Size: 0x1000, UserAddr: 0x6000_0000}
	if err := m.Add(add, extra); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(MemoryRegion{GuestPhysAddr: 0x8800, Size: 0x100, UserAddr: 0x7000_0000}, extra); err == nil {
		t.Error("overlapping Add accepted")
	}
	if err := m.WriteGuest(0x8004, []byte{7}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	extra.ReadAt(b[:], 4)
	if b[0] != 7 {
		t.Errorf("added region not backed by its file")
	}
	if got := m.Regions(); len(got) != 3 || got[1] != add {
		t.Fatalf("regions %v, want the added one second (sorted by guest address)", got)
	}
	if err := m.Remove(MemoryRegion{GuestPhysAddr: 0x8000, Size: 0x1000, UserAddr: 0x6000_0001}); !errors.Is(err, ErrNoMemory) {
		t.Errorf("Remove with wrong user address: %v", err)
	}
	if err := m.Remove(MemoryRegion{GuestPhysAddr: 0x8000, Size: 0x1000, UserAddr: 0x6000_0000, MmapOffset: 99}); err != nil {
		t.Fatalf("Remove (mmap offset ignored): %v", err)
	}
	if err := m.ReadGuest(0x8000, b[:]); !errors.Is(err, ErrNoMemory) {
		t.Errorf("removed region still readable: %v", err)
	}
	// Replacing the table drops the old regions.
	if err := m.SetTable([]MemoryRegion{add}, []*os.File{extra}); err != nil {
		t.Fatal(err)
	}
	if err := m.ReadGuest(0, b[:]); !errors.Is(err, ErrNoMemory) {
		t.Errorf("old region survived SetTable: %v", err)
	}
	if err := m.ReadGuest(0x8004, b[:]); err != nil || b[0] != 7 {
		t.Errorf("new table: %v %d", err, b[0])
	}
}

// TestMemoryMapUpdatesWaitForViews: a table change must not unmap memory
// a view still uses.
func TestMemoryMapUpdatesWaitForViews(t *testing.T) {
	checkFDLeaks(t)
	m, _ := twoRegionMap(t)
	v := m.Acquire()
	s, err := v.GuestSlice(0, 4)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.SetTable(nil, nil) }()
	select {
	case <-done:
		t.Fatal("SetTable unmapped memory while a view was held")
	case <-time.After(50 * time.Millisecond):
	}
	s[0] = 1 // still mapped
	v.Release()
	v.Release() // harmless
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := v.GuestSlice(0, 1); err == nil {
		t.Error("released view still translates")
	}
	if len(m.Regions()) != 0 {
		t.Error("table not replaced")
	}
}

func TestMemoryMapClose(t *testing.T) {
	checkFDLeaks(t)
	m, f := twoRegionMap(t)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := m.ReadGuest(0, make([]byte, 1)); !errors.Is(err, ErrNoMemory) {
		t.Errorf("read after Close: %v", err)
	}
	if err := m.SetTable([]MemoryRegion{{Size: 0x1000}}, []*os.File{f}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetTable after Close: %v", err)
	}
	if err := m.Add(MemoryRegion{Size: 0x1000}, f); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
}

// TestMemoryMapTruncatedFile: the front-end shrinks the file after the
// mapping; access faults (SIGBUS) and the copy helpers return an error
// instead of crashing the process.
func TestMemoryMapTruncatedFile(t *testing.T) {
	checkFDLeaks(t)
	m, f := twoRegionMap(t)
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	err := m.ReadGuest(0x100, make([]byte, 8))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("fault")) {
		t.Fatalf("read of truncated memory: %v, want a fault error", err)
	}
	if err := m.WriteGuest(0x10000, []byte{1}); err == nil {
		t.Fatal("write to truncated memory succeeded")
	}
}
