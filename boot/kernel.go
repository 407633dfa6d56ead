package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors; every error this package returns wraps one of them (or
// is about the caller's Config), so callers can use errors.Is.
var (
	// ErrUnknownFormat: the image is neither an ELF64 nor a bzImage.
	ErrUnknownFormat = errors.New("neither an ELF64 nor a bzImage kernel")
	// ErrTruncated: a header or segment points past the end of the file.
	ErrTruncated = errors.New("truncated kernel image")
	// ErrMalformed: headers are inconsistent (bad magic, overlapping
	// segments, entry outside the image, absurd counts).
	ErrMalformed = errors.New("malformed kernel image")
	// ErrUnsupported: a well-formed kernel this loader cannot boot (wrong
	// architecture, old boot protocol, no 64-bit entry).
	ErrUnsupported = errors.New("unsupported kernel")
	// ErrNoFit: the kernel or initrd does not fit in guest memory, or would
	// overlap the boot structures.
	ErrNoFit = errors.New("does not fit in guest memory")
	// ErrCmdlineTooLong: the command line exceeds what the kernel accepts.
	ErrCmdlineTooLong = errors.New("command line too long")
)

// Kind is a kernel image format.
type Kind int

// Kernel image formats.
const (
	KindELF Kind = iota + 1
	KindBzImage
)

func (k Kind) String() string {
	switch k {
	case KindELF:
		return "ELF64"
	case KindBzImage:
		return "bzImage"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Kernel is a parsed, validated kernel image. It keeps a reference to the
// image passed to ParseKernel, which must not change afterwards.
type Kernel struct {
	Kind Kind
	// Entry64 is the guest-physical 64-bit entry point. For an ELF kernel
	// it is e_entry translated to a physical address. For a bzImage it is
	// the entry if loaded at its preferred address; Load may place a
	// relocatable bzImage elsewhere, so EntryState.RIP is authoritative.
	Entry64 uint64
	// PVHEntry is the 32-bit PVH entry from a Xen ELF note
	// (XEN_ELFNOTE_PHYS32_ENTRY), or 0 if there is none.
	PVHEntry uint64
	// Protocol is the bzImage boot protocol version (0x020c for 2.12), or
	// 0 for an ELF kernel.
	Protocol uint16

	image []byte
	loads []elfLoad // KindELF
	bz    bzHeader  // KindBzImage
}

// ParseKernel detects the format of image and validates its headers. It
// does not depend on the guest's memory size; Load checks placement.
func ParseKernel(image []byte) (*Kernel, error) {
	var (
		k   *Kernel
		err error
	)
	switch {
	case bytes.HasPrefix(image, []byte(elfMagic)):
		k, err = parseELF(image)
	case looksLikeBzImage(image):
		k, err = parseBzImage(image)
	default:
		err = ErrUnknownFormat
	}
	if err != nil {
		return nil, fmt.Errorf("parse kernel: %w", err)
	}
	return k, nil
}

// looksLikeBzImage reports whether image carries either bzImage magic (the
// boot sector signature or the "HdrS" header magic), so that a bzImage with
// one of them damaged gets a precise error rather than "unknown format".
func looksLikeBzImage(image []byte) bool {
	if len(image) >= hdrBootFlag+2 && binary.LittleEndian.Uint16(image[hdrBootFlag:]) == bootFlagMagic {
		return true
	}
	return len(image) >= hdrMagic+4 && string(image[hdrMagic:hdrMagic+4]) == headerMagic
}

func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func le64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

func put16(b []byte, off int, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }
func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func put64(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }

// inFile reports whether [off, off+n) lies within a file of size size,
// without overflowing.
func inFile(off, n uint64, size int) bool {
	return off <= uint64(size) && n <= uint64(size)-off
}

func alignUp(v, a uint64) uint64   { return (v + a - 1) &^ (a - 1) }
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }
