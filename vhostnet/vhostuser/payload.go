package vhostuser

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ne is the protocol's byte order: all numbers are host-native.
var ne = binary.NativeEndian

// Payload is the body of a message. The concrete types are [U64],
// [VringState], [VringAddr], [MemoryTable], [SingleMemoryRegion],
// [ConfigSpace], [VringFile] and [Raw]; the set is closed.
type Payload interface {
	// wireSize is the encoded length in bytes.
	wireSize() int
	// put encodes into b, which is exactly wireSize bytes.
	put(b []byte)
}

// U64 is a single 64-bit number: features, queue counts, statuses and the
// REPLY_ACK status (0 = success).
type U64 uint64

func (U64) wireSize() int    { return 8 }
func (v U64) put(b []byte)   { ne.PutUint64(b, uint64(v)) }
func decodeU64(b []byte) U64 { return U64(ne.Uint64(b)) }

// VringState is struct vhost_vring_state: a queue index and a number (ring
// size, base index or enable flag, depending on the request).
type VringState struct {
	Index uint32
	Num   uint32
}

func (VringState) wireSize() int { return 8 }
func (v VringState) put(b []byte) {
	ne.PutUint32(b[0:], v.Index)
	ne.PutUint32(b[4:], v.Num)
}
func decodeVringState(b []byte) VringState {
	return VringState{Index: ne.Uint32(b[0:]), Num: ne.Uint32(b[4:])}
}

// VringAddr is struct vhost_vring_addr (40 bytes). Desc, Used and Avail are
// front-end user addresses (translate them with [MemoryView.UserSlice]); Log
// is a guest-physical address used only for dirty logging.
type VringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

// VringFlagLog (VHOST_VRING_F_LOG) asks for used-ring writes to be logged.
const VringFlagLog = 1 << 0

const vringAddrSize = 40

func (VringAddr) wireSize() int { return vringAddrSize }
func (v VringAddr) put(b []byte) {
	ne.PutUint32(b[0:], v.Index)
	ne.PutUint32(b[4:], v.Flags)
	ne.PutUint64(b[8:], v.Desc)
	ne.PutUint64(b[16:], v.Used)
	ne.PutUint64(b[24:], v.Avail)
	ne.PutUint64(b[32:], v.Log)
}
func decodeVringAddr(b []byte) VringAddr {
	return VringAddr{
		Index: ne.Uint32(b[0:]),
		Flags: ne.Uint32(b[4:]),
		Desc:  ne.Uint64(b[8:]),
		Used:  ne.Uint64(b[16:]),
		Avail: ne.Uint64(b[24:]),
		Log:   ne.Uint64(b[32:]),
	}
}

// MemoryRegion describes one shared-memory region of the guest: Size bytes
// at guest-physical GuestPhysAddr, mapped in the front-end at UserAddr, and
// found at MmapOffset in the region's file.
type MemoryRegion struct {
	GuestPhysAddr uint64
	Size          uint64
	UserAddr      uint64
	MmapOffset    uint64
}

const memoryRegionSize = 32

func (r MemoryRegion) put(b []byte) {
	ne.PutUint64(b[0:], r.GuestPhysAddr)
	ne.PutUint64(b[8:], r.Size)
	ne.PutUint64(b[16:], r.UserAddr)
	ne.PutUint64(b[24:], r.MmapOffset)
}
func decodeMemoryRegion(b []byte) MemoryRegion {
	return MemoryRegion{
		GuestPhysAddr: ne.Uint64(b[0:]),
		Size:          ne.Uint64(b[8:]),
		UserAddr:      ne.Uint64(b[16:]),
		MmapOffset:    ne.Uint64(b[24:]),
	}
}

// validate checks what can be checked of one region in isolation: it is
// non-empty and none of its three ranges wraps around 2^64.
func (r MemoryRegion) validate() error {
	switch {
	case r.Size == 0:
		return fmt.Errorf("region at guest %#x has size 0", r.GuestPhysAddr)
	case r.GuestPhysAddr > math.MaxUint64-r.Size:
		return fmt.Errorf("region guest range %#x+%#x overflows", r.GuestPhysAddr, r.Size)
	case r.UserAddr > math.MaxUint64-r.Size:
		return fmt.Errorf("region user range %#x+%#x overflows", r.UserAddr, r.Size)
	case r.MmapOffset > math.MaxUint64-r.Size:
		return fmt.Errorf("region mmap range %#x+%#x overflows", r.MmapOffset, r.Size)
	}
	return nil
}

// String formats the region for error messages.
func (r MemoryRegion) String() string {
	return fmt.Sprintf("{guest %#x size %#x user %#x offset %#x}",
		r.GuestPhysAddr, r.Size, r.UserAddr, r.MmapOffset)
}

// MemoryTable is the SET_MEM_TABLE payload: up to [MaxMemTableRegions]
// regions, each backed by the file descriptor at the same position.
type MemoryTable struct {
	Regions []MemoryRegion
}

const memTableHeaderSize = 8 // u32 nregions, u32 padding

func (t MemoryTable) wireSize() int {
	return memTableHeaderSize + memoryRegionSize*len(t.Regions)
}
func (t MemoryTable) put(b []byte) {
	ne.PutUint32(b[0:], uint32(len(t.Regions)))
	ne.PutUint32(b[4:], 0)
	for i, r := range t.Regions {
		r.put(b[memTableHeaderSize+i*memoryRegionSize:])
	}
}

// SingleMemoryRegion is the ADD_MEM_REG / REM_MEM_REG payload: 8 bytes of
// padding, then one region.
type SingleMemoryRegion struct {
	Region MemoryRegion
}

const singleRegionSize = 8 + memoryRegionSize

func (SingleMemoryRegion) wireSize() int { return singleRegionSize }
func (s SingleMemoryRegion) put(b []byte) {
	ne.PutUint64(b[0:], 0)
	s.Region.put(b[8:])
}

// ConfigSpace is the GET_CONFIG / SET_CONFIG payload: a window of the virtio
// device configuration space. The size field on the wire is len(Data).
type ConfigSpace struct {
	Offset uint32
	Flags  ConfigFlags
	Data   []byte
}

const configHeaderSize = 12 // u32 offset, size, flags

func (c ConfigSpace) wireSize() int { return configHeaderSize + len(c.Data) }
func (c ConfigSpace) put(b []byte) {
	ne.PutUint32(b[0:], c.Offset)
	ne.PutUint32(b[4:], uint32(len(c.Data)))
	ne.PutUint32(b[8:], uint32(c.Flags))
	copy(b[configHeaderSize:], c.Data)
}

// VringFile is the SET_VRING_KICK / CALL / ERR payload: a queue index in
// bits 0-7 and, in bit 8, "no descriptor attached" (the ring is polled).
type VringFile struct {
	Index uint8
	NoFD  bool
}

func (VringFile) wireSize() int { return 8 }
func (v VringFile) put(b []byte) {
	x := uint64(v.Index)
	if v.NoFD {
		x |= vringFileNoFD
	}
	ne.PutUint64(b, x)
}

// Raw is the payload of a request this package does not implement. It is
// kept only so the request can be refused; its descriptors are closed.
type Raw []byte

func (r Raw) wireSize() int  { return len(r) }
func (r Raw) put(b []byte)   { copy(b, r) }
func (r Raw) String() string { return fmt.Sprintf("raw[%d]", len(r)) }
