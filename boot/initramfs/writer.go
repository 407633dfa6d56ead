package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// File type bits of a newc header's mode field (the values of S_IFMT).
const (
	typeDir     = 0o040000
	typeRegular = 0o100000
	typeSymlink = 0o120000
	typeChar    = 0o020000
	typeBlock   = 0o060000
)

const (
	magic      = "070701"
	headerSize = 110 // the magic plus 13 fields of 8 hex digits
	trailer    = "TRAILER!!!"

	// pathMax is the kernel's PATH_MAX: the unpacker ignores longer names
	// and symlink targets.
	pathMax = 4096

	// The kernel builds a device number as major<<20 | minor.
	maxMajor = 1<<12 - 1
	maxMinor = 1<<20 - 1

	// The file size field is 32 bits wide.
	maxFileSize = 1<<32 - 1

	// permMask is what callers may pass as permissions.
	permMask = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
)

// ErrClosed is returned by every call made after Close.
var ErrClosed = errors.New("initramfs: writer closed")

// Writer writes an uncompressed newc cpio archive to an io.Writer.
//
// Names are paths relative to the root of the guest's file system; one
// leading slash is accepted and dropped ("/init" and "init" are the same
// entry). Each entry's parent directory must have been written first.
// After the first write error every call returns that error.
type Writer struct {
	w      io.Writer
	ino    uint32
	kinds  map[string]uint32 // written names -> file type bits
	err    error
	closed bool
}

// NewWriter returns a Writer that writes an archive to w. The caller must
// call Close to end the archive; Close does not close w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, kinds: make(map[string]uint32)}
}

// Mkdir adds a directory with permissions perm.
func (w *Writer) Mkdir(name string, perm fs.FileMode) error {
	mode, err := permBits("mkdir", name, perm)
	if err != nil {
		return err
	}
	return w.add("mkdir", name, typeDir|mode, 2, 0, 0, nil)
}

// WriteFile adds a regular file holding data, with permissions perm.
func (w *Writer) WriteFile(name string, perm fs.FileMode, data []byte) error {
	mode, err := permBits("write file", name, perm)
	if err != nil {
		return err
	}
	if int64(len(data)) > maxFileSize {
		return fmt.Errorf("initramfs: write file %q: %d bytes exceeds the format's %d", name, len(data), int64(maxFileSize))
	}
	return w.add("write file", name, typeRegular|mode, 1, 0, 0, data)
}

// Symlink adds a symbolic link name pointing at target. The target is
// stored as written and need not exist in the archive.
func (w *Writer) Symlink(name, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 || len(target) >= pathMax {
		return fmt.Errorf("initramfs: symlink %q: invalid target %q", name, target)
	}
	return w.add("symlink", name, typeSymlink|0o777, 1, 0, 0, []byte(target))
}

// Mknod adds a device node. mode holds the permissions and the kind:
// fs.ModeDevice|fs.ModeCharDevice for a character device (such as
// /dev/console, 5:1), fs.ModeDevice alone for a block device.
func (w *Writer) Mknod(name string, mode fs.FileMode, major, minor uint32) error {
	var kind uint32
	switch mode.Type() {
	case fs.ModeDevice | fs.ModeCharDevice:
		kind = typeChar
	case fs.ModeDevice:
		kind = typeBlock
	default:
		return fmt.Errorf("initramfs: mknod %q: mode %v is not a device", name, mode)
	}
	bits, err := permBits("mknod", name, mode&^fs.ModeType)
	if err != nil {
		return err
	}
	if major > maxMajor || minor > maxMinor {
		return fmt.Errorf("initramfs: mknod %q: device %d:%d out of range (major <= %d, minor <= %d)", name, major, minor, maxMajor, maxMinor)
	}
	return w.add("mknod", name, kind|bits, 1, major, minor, nil)
}

// Close writes the TRAILER!!! record that ends the archive. It does not
// close the underlying writer. Calling Close again returns nil, or the
// error that stopped the Writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if w.err != nil {
		w.closed = true
		return w.err
	}
	// The trailer is the one record with nlink 1 and every other field zero.
	w.write("close", header{nlink: 1, name: trailer}, nil)
	w.closed = true
	return w.err
}

// header holds the fields of one newc record that govmm sets; uid, gid,
// mtime, the device of the archive's file system and the checksum are zero.
type header struct {
	ino, mode, nlink uint32
	size             uint32
	rmajor, rminor   uint32
	name             string
}

func (w *Writer) add(op, name string, mode, nlink, rmajor, rminor uint32, body []byte) error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	clean, err := cleanName(name)
	if err != nil {
		return fmt.Errorf("initramfs: %s %q: %w", op, name, err)
	}
	if _, dup := w.kinds[clean]; dup {
		return fmt.Errorf("initramfs: %s %q: already in the archive", op, name)
	}
	if dir := path.Dir(clean); dir != "." && w.kinds[dir] != typeDir {
		return fmt.Errorf("initramfs: %s %q: parent directory %q not written yet", op, name, dir)
	}
	w.ino++
	w.write(op, header{
		ino:    w.ino,
		mode:   mode,
		nlink:  nlink,
		size:   uint32(len(body)),
		rmajor: rmajor,
		rminor: rminor,
		name:   clean,
	}, body)
	if w.err != nil {
		return w.err
	}
	w.kinds[clean] = mode &^ 0o7777
	return nil
}

// write emits one record: header, name, NUL, padding to 4 bytes, body,
// padding to 4 bytes. Every record starts 4-byte aligned, so padding
// depends only on the record's own lengths.
func (w *Writer) write(op string, h header, body []byte) {
	nameSize := len(h.name) + 1
	buf := make([]byte, 0, headerSize+nameSize+3+len(body)+3)
	buf = append(buf, magic...)
	for _, v := range [13]uint32{
		h.ino, h.mode, 0, 0, h.nlink, 0, h.size,
		0, 0, h.rmajor, h.rminor, uint32(nameSize), 0,
	} {
		buf = appendHex8(buf, v)
	}
	buf = append(buf, h.name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(headerSize+nameSize))...)
	buf = append(buf, body...)
	buf = append(buf, make([]byte, pad4(len(body)))...)
	if _, err := w.w.Write(buf); err != nil {
		w.err = fmt.Errorf("initramfs: %s %q: %w", op, h.name, err)
	}
}

func appendHex8(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[(v>>uint(shift))&0xf])
	}
	return b
}

func pad4(n int) int { return (4 - n%4) % 4 }

// cleanName turns a caller's name into the form stored in the archive:
// relative, clean, without "." or ".." elements.
func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(name, "/")
	switch {
	case n == "" || n == ".":
		return "", errors.New("empty name")
	case strings.IndexByte(n, 0) >= 0:
		return "", errors.New("name contains NUL")
	case len(n)+1 > pathMax:
		return "", fmt.Errorf("name longer than %d bytes", pathMax-1)
	case n == trailer:
		return "", errors.New("name is the archive's end marker")
	case path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../") || strings.HasPrefix(n, "/"):
		return "", errors.New("name is not a clean relative path")
	}
	return n, nil
}

func permBits(op, name string, perm fs.FileMode) (uint32, error) {
	if perm&^permMask != 0 {
		return 0, fmt.Errorf("initramfs: %s %q: mode %v has bits other than permissions", op, name, perm)
	}
	bits := uint32(perm.Perm())
	if perm&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if perm&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if perm&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits, nil
}
