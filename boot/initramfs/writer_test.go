package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// record is one parsed newc entry.
type record struct {
	offset         int
	ino, mode      uint32
	uid, gid       uint32
	nlink, mtime   uint32
	devMaj, devMin uint32
	rMaj, rMin     uint32
	check          uint32
	name           string
	body           []byte
}

// parseNewc reads a newc archive the way the kernel's unpacker does, and
// checks the format rules on the way: magic, hex fields, NUL-terminated
// names, 4-byte padding filled with zeros, and a trailer ending the data.
func parseNewc(b []byte) ([]record, error) {
	var recs []record
	off := 0
	for {
		if len(b)-off < headerSize {
			return recs, fmt.Errorf("offset %d: truncated header", off)
		}
		if off%4 != 0 {
			return recs, fmt.Errorf("offset %d: record not 4-byte aligned", off)
		}
		h := b[off : off+headerSize]
		if string(h[:6]) != magic {
			return recs, fmt.Errorf("offset %d: magic %q", off, h[:6])
		}
		var f [13]uint32
		for i := range f {
			field := string(h[6+8*i : 14+8*i])
			v, err := strconv.ParseUint(field, 16, 32)
			if err != nil {
				return recs, fmt.Errorf("offset %d: field %d %q: %w", off, i, field, err)
			}
			f[i] = uint32(v)
		}
		r := record{
			offset: off, ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5],
			devMaj: f[7], devMin: f[8], rMaj: f[9], rMin: f[10], check: f[12],
		}
		size, nameSize := int(f[6]), int(f[11])
		p := off + headerSize
		if nameSize < 1 || p+nameSize > len(b) {
			return recs, fmt.Errorf("offset %d: bad name size %d", off, nameSize)
		}
		if b[p+nameSize-1] != 0 {
			return recs, fmt.Errorf("offset %d: name not NUL-terminated", off)
		}
		r.name = string(b[p : p+nameSize-1])
		p += nameSize
		if err := zeros(b, p, pad4(headerSize+nameSize)); err != nil {
			return recs, fmt.Errorf("%s: name padding: %w", r.name, err)
		}
		p += pad4(headerSize + nameSize)
		if p+size > len(b) {
			return recs, fmt.Errorf("%s: body of %d bytes truncated", r.name, size)
		}
		r.body = b[p : p+size]
		p += size
		if err := zeros(b, p, pad4(size)); err != nil {
			return recs, fmt.Errorf("%s: body padding: %w", r.name, err)
		}
		p += pad4(size)
		recs = append(recs, r)
		off = p
		if r.name == trailer {
			if off != len(b) {
				return recs, fmt.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return recs, nil
		}
	}
}

func zeros(b []byte, at, n int) error {
	if at+n > len(b) {
		return fmt.Errorf("truncated at %d", at)
	}
	for i := at; i < at+n; i++ {
		if b[i] != 0 {
			return fmt.Errorf("byte %d is %#x", i, b[i])
		}
	}
	return nil
}

// op is one call on a Writer.
type op func(w *Writer) error

func mkdir(name string, perm fs.FileMode) op {
	return func(w *Writer) error { return w.Mkdir(name, perm) }
}

func file(name string, perm fs.FileMode, data string) op {
	return func(w *Writer) error { return w.WriteFile(name, perm, []byte(data)) }
}

func symlink(name, target string) op {
	return func(w *Writer) error { return w.Symlink(name, target) }
}

func mknod(name string, mode fs.FileMode, major, minor uint32) op {
	return func(w *Writer) error { return w.Mknod(name, mode, major, minor) }
}

func build(t *testing.T, ops ...op) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i, o := range ops {
		if err := o(w); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	type want struct {
		name       string
		mode       uint32
		nlink      uint32
		body       string
		rMaj, rMin uint32
	}
	tests := []struct {
		name string
		ops  []op
		want []want
	}{
		{
			name: "empty archive is only the trailer",
			want: nil,
		},
		{
			name: "file sizes cover every padding remainder",
			ops: []op{
				file("a", 0o644, ""),
				file("bb", 0o644, "1"),
				file("ccc", 0o600, "12"),
				file("dddd", 0o755, "123"),
				file("eeeee", 0o755, "1234"),
			},
			want: []want{
				{name: "a", mode: 0o100644, nlink: 1},
				{name: "bb", mode: 0o100644, nlink: 1, body: "1"},
				{name: "ccc", mode: 0o100600, nlink: 1, body: "12"},
				{name: "dddd", mode: 0o100755, nlink: 1, body: "123"},
				{name: "eeeee", mode: 0o100755, nlink: 1, body: "1234"},
			},
		},
		{
			name: "a small root file system",
			ops: []op{
				mkdir("/dev", 0o755),
				mknod("/dev/console", fs.ModeDevice|fs.ModeCharDevice|0o600, 5, 1),
				mknod("dev/vda", fs.ModeDevice|0o660, 254, 0),
				mkdir("bin", 0o755),
				file("bin/busybox", 0o755, "\x7fELF..."),
				symlink("bin/sh", "busybox"),
				file("/init", 0o755, "#!/bin/sh\necho hi\n"),
				mkdir("tmp", 0o777|fs.ModeSticky),
				file("bin/su", 0o755|fs.ModeSetuid|fs.ModeSetgid, "x"),
			},
			want: []want{
				{name: "dev", mode: 0o040755, nlink: 2},
				{name: "dev/console", mode: 0o020600, nlink: 1, rMaj: 5, rMin: 1},
				{name: "dev/vda", mode: 0o060660, nlink: 1, rMaj: 254, rMin: 0},
				{name: "bin", mode: 0o040755, nlink: 2},
				{name: "bin/busybox", mode: 0o100755, nlink: 1, body: "\x7fELF..."},
				{name: "bin/sh", mode: 0o120777, nlink: 1, body: "busybox"},
				{name: "init", mode: 0o100755, nlink: 1, body: "#!/bin/sh\necho hi\n"},
				{name: "tmp", mode: 0o041777, nlink: 2},
				{name: "bin/su", mode: 0o106755, nlink: 1, body: "x"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := parseNewc(build(t, tt.ops...))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(recs) != len(tt.want)+1 {
				t.Fatalf("got %d records, want %d plus the trailer", len(recs), len(tt.want))
			}
			inos := map[uint32]bool{}
			for i, w := range tt.want {
				r := recs[i]
				if r.name != w.name || r.mode != w.mode || r.nlink != w.nlink || string(r.body) != w.body || r.rMaj != w.rMaj || r.rMin != w.rMin {
					t.Errorf("record %d = {%q %#o nlink %d %q rdev %d:%d}, want {%q %#o nlink %d %q rdev %d:%d}",
						i, r.name, r.mode, r.nlink, r.body, r.rMaj, r.rMin, w.name, w.mode, w.nlink, w.body, w.rMaj, w.rMin)
				}
				if r.uid != 0 || r.gid != 0 || r.mtime != 0 || r.devMaj != 0 || r.devMin != 0 || r.check != 0 {
					t.Errorf("record %d (%s): uid/gid/mtime/dev/check not zero: %+v", i, r.name, r)
				}
				if r.ino == 0 || inos[r.ino] {
					t.Errorf("record %d (%s): inode %d is zero or reused", i, r.name, r.ino)
				}
				inos[r.ino] = true
			}
			tr := recs[len(recs)-1]
			if tr.name != trailer || tr.mode != 0 || tr.ino != 0 || len(tr.body) != 0 || tr.nlink != 1 {
				t.Errorf("trailer = %+v", tr)
			}
		})
	}
}

// TestExactBytes pins the layout of one record against a hand-computed
// image: 110-byte header, name with NUL padded to 116, body padded to 4.
func TestExactBytes(t *testing.T) {
	got := build(t, file("init", 0o755, "hello"))
	want := "070701" +
		"00000001" + "000081ED" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000005" + "00000000" + "00000000" + "00000000" + "00000000" + "00000005" + "00000000" +
		"init\x00" + "\x00" + // 110+5 = 115 -> 116
		"hello" + "\x00\x00\x00" + // 5 -> 8
		"070701" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "0000000B" + "00000000" +
		"TRAILER!!!\x00" + "\x00\x00\x00" // 110+11 = 121 -> 124
	if string(got) != want {
		t.Fatalf("archive bytes differ\n got %q\nwant %q", got, want)
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name  string
		setup []op
		op    op
	}{
		{name: "empty name", op: file("", 0o644, "")},
		{name: "root", op: mkdir("/", 0o755)},
		{name: "dot", op: mkdir(".", 0o755)},
		{name: "dotdot", op: file("..", 0o644, "")},
		{name: "escaping", op: file("../etc/passwd", 0o644, "")},
		{name: "unclean", setup: []op{mkdir("a", 0o755)}, op: file("a/../b", 0o644, "")},
		{name: "double slash", setup: []op{mkdir("a", 0o755)}, op: file("a//b", 0o644, "")},
		{name: "trailing slash", op: mkdir("a/", 0o755)},
		{name: "two leading slashes", op: file("//a", 0o644, "")},
		{name: "NUL in name", op: file("a\x00b", 0o644, "")},
		{name: "too long", op: file(strings.Repeat("a", pathMax), 0o644, "")},
		{name: "trailer name", op: file(trailer, 0o644, "")},
		{name: "missing parent", op: file("bin/sh", 0o755, "")},
		{name: "parent is a file", setup: []op{file("bin", 0o755, "")}, op: file("bin/sh", 0o755, "")},
		{name: "duplicate", setup: []op{file("init", 0o755, "")}, op: file("/init", 0o755, "")},
		{name: "type bits in perm", op: file("a", fs.ModeDir|0o755, "")},
		{name: "symlink mode in mkdir", op: mkdir("a", fs.ModeSymlink|0o755)},
		{name: "empty symlink target", op: symlink("a", "")},
		{name: "NUL in symlink target", op: symlink("a", "b\x00")},
		{name: "mknod without device type", op: mknod("null", 0o666, 1, 3)},
		{name: "mknod of a pipe", op: mknod("p", fs.ModeNamedPipe|0o666, 0, 0)},
		{name: "major too large", op: mknod("c", fs.ModeDevice|fs.ModeCharDevice, 4096, 0)},
		{name: "minor too large", op: mknod("c", fs.ModeDevice|fs.ModeCharDevice, 1, 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			for i, o := range tt.setup {
				if err := o(w); err != nil {
					t.Fatalf("setup %d: %v", i, err)
				}
			}
			before := buf.Len()
			if err := tt.op(w); err == nil {
				t.Fatal("accepted")
			}
			if buf.Len() != before {
				t.Errorf("a rejected entry wrote %d bytes", buf.Len()-before)
			}
			// A rejected entry does not poison the writer.
			if err := w.WriteFile("ok", 0o644, []byte("x")); err != nil {
				t.Fatalf("write after rejection: %v", err)
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := parseNewc(buf.Bytes()); err != nil {
				t.Fatalf("parse: %v", err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n := buf.Len()
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if buf.Len() != n {
		t.Fatal("second Close wrote another trailer")
	}
	calls := map[string]op{
		"Mkdir":     mkdir("d", 0o755),
		"WriteFile": file("f", 0o644, ""),
		"Symlink":   symlink("l", "f"),
		"Mknod":     mknod("c", fs.ModeDevice|fs.ModeCharDevice|0o600, 5, 1),
	}
	for name, o := range calls {
		if err := o(w); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// failWriter accepts limit bytes, then fails every write.
type failWriter struct {
	limit int
	err   error
}

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		return 0, f.err
	}
	f.limit -= len(p)
	return len(p), nil
}

func TestWriteErrorIsSticky(t *testing.T) {
	cause := errors.New("disk full")
	w := NewWriter(&failWriter{limit: 200, err: cause})
	if err := w.WriteFile("a", 0o644, []byte("x")); err != nil {
		t.Fatalf("first entry fits: %v", err)
	}
	err := w.WriteFile("b", 0o644, bytes.Repeat([]byte("x"), 100))
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("got %v, want an error naming b and wrapping the cause", err)
	}
	if err := w.Mkdir("c", 0o755); !errors.Is(err, cause) {
		t.Errorf("Mkdir after failure: %v", err)
	}
	if err := w.Close(); !errors.Is(err, cause) {
		t.Errorf("Close after failure: %v", err)
	}
	if err := w.Close(); !errors.Is(err, cause) {
		t.Errorf("second Close after failure: %v", err)
	}
}

// TestCpioTool cross-checks the output with GNU cpio where it is installed:
// cpio must list the same names and extract the same contents.
func TestCpioTool(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed")
	}
	data := build(t,
		mkdir("bin", 0o755),
		file("bin/tool", 0o755, "#!/bin/sh\nexit 0\n"),
		symlink("bin/alias", "tool"),
		mkdir("etc", 0o755),
		file("etc/odd", 0o600, "abc"),
		file("init", 0o755, strings.Repeat("z", 4097)),
	)
	archive := filepath.Join(t.TempDir(), "a.cpio")
	if err := os.WriteFile(archive, data, 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(cpio, "-t", "--quiet", "-F", archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	wantList := "bin\nbin/tool\nbin/alias\netc\netc/odd\ninit\n"
	if string(out) != wantList {
		t.Errorf("cpio -t lists\n%s\nwant\n%s", out, wantList)
	}

	dir := t.TempDir()
	cmd = exec.Command(cpio, "-i", "--quiet", "--no-absolute-filenames", "-F", archive)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for name, want := range map[string]string{
		"bin/tool": "#!/bin/sh\nexit 0\n",
		"etc/odd":  "abc",
		"init":     strings.Repeat("z", 4097),
	} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: got %d bytes (%v), want %d", name, len(got), err, len(want))
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/alias")); err != nil || target != "tool" {
		t.Errorf("bin/alias -> %q (%v), want tool", target, err)
	}
	st, err := os.Stat(filepath.Join(dir, "etc/odd"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("etc/odd mode %v (%v), want 0600", st.Mode(), err)
	}
}

// FuzzWriter checks that no name, target or content makes the Writer panic
// or write an archive that does not parse back to what was accepted.
func FuzzWriter(f *testing.F) {
	f.Add("init", "#!/bin/sh\n", "busybox", uint32(0o755))
	f.Add("/dev/console", "", "", uint32(0o600))
	f.Add("a/../b", "x", "../../etc", uint32(0o7777))
	f.Add("TRAILER!!!", "\x00\x00", "\x00", uint32(0o170000))
	f.Add("", "", "", uint32(0))
	f.Fuzz(func(t *testing.T, name, data, target string, perm uint32) {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		if err := w.Mkdir("d", 0o755); err != nil {
			t.Fatal(err)
		}
		type accepted struct{ name, body string }
		var want []accepted
		mode := fs.FileMode(perm)
		if w.WriteFile(name, mode, []byte(data)) == nil {
			want = append(want, accepted{strings.TrimPrefix(name, "/"), data})
		}
		if w.Symlink("d/"+name, target) == nil {
			want = append(want, accepted{"d/" + name, target})
		}
		if w.Mknod(name+".dev", mode|fs.ModeDevice|fs.ModeCharDevice, perm>>20, perm&0xfffff) == nil {
			want = append(want, accepted{strings.TrimPrefix(name, "/") + ".dev", ""})
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		recs, err := parseNewc(buf.Bytes())
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if len(recs) != len(want)+2 {
			t.Fatalf("%d records, want %d", len(recs), len(want)+2)
		}
		for i, a := range want {
			r := recs[i+1]
			if r.name != a.name || string(r.body) != a.body {
				t.Errorf("record %d = %q %q, want %q %q", i+1, r.name, r.body, a.name, a.body)
			}
			if strings.Contains(r.name, "\x00") || strings.HasPrefix(r.name, "/") || r.name == trailer {
				t.Errorf("accepted bad name %q", r.name)
			}
		}
	})
}
