package kvm

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// setImmediateExit sets kvm_run.immediate_exit with an atomic 32-bit store
// over its aligned word (request_interrupt_window, immediate_exit,
// padding1[2]): the vCPU thread and KVM read it concurrently.
func (v *VCPU) setImmediateExit() {
	w := (*uint32)(unsafe.Pointer(&v.run[0]))
	atomic.StoreUint32(w, 1<<(8*runImmediateExit))
}

// decodeExit turns kvm_run into the reused typed exit value.
func (v *VCPU) decodeExit() Exit {
	r := v.run
	le := binary.LittleEndian
	reason := ExitReason(le.Uint32(r[runExitReason:]))
	switch reason {
	case ExitIO:
		size := r[runIOSize]
		count := le.Uint32(r[runIOCount:])
		off := le.Uint64(r[runIODataOffset:])
		n := uint64(size) * uint64(count)
		if off > uint64(len(r)) || n > uint64(len(r))-off {
			v.unknown = UnknownExit{ExitReason: reason}
			return &v.unknown
		}
		v.io = IOExit{
			Port:  le.Uint16(r[runIOPort:]),
			Size:  size,
			Out:   r[runIODirection] == 1,
			Count: count,
			Data:  r[off : off+n : off+n],
		}
		return &v.io
	case ExitMMIO:
		n := le.Uint32(r[runMMIOLen:])
		if n > 8 {
			n = 8
		}
		v.mmio = MMIOExit{
			Addr:  le.Uint64(r[runMMIOPhysAddr:]),
			Write: r[runMMIOIsWrite] != 0,
			Data:  r[runMMIOData : runMMIOData+int(n) : runMMIOData+int(n)],
		}
		return &v.mmio
	case ExitHLT:
		return HLTExit{}
	case ExitShutdown:
		return ShutdownExit{}
	case ExitIntr:
		return IntrExit{}
	case ExitInternalError:
		v.internal.Suberror = le.Uint32(r[runInternalSuberror:])
		v.internal.Data = readU64s(r[runInternalData:], le.Uint32(r[runInternalNData:]), v.internal.Data[:0])
		return &v.internal
	case ExitFailEntry:
		v.fail = FailEntryExit{HardwareReason: le.Uint64(r[runFailEntryReason:]), CPU: le.Uint32(r[runFailEntryCPU:])}
		return &v.fail
	case ExitSystemEvent:
		v.sysev.Type = le.Uint32(r[runSystemEventType:])
		v.sysev.Data = readU64s(r[runSystemEventData:], le.Uint32(r[runSystemEventNData:]), v.sysev.Data[:0])
		return &v.sysev
	}
	v.unknown = UnknownExit{ExitReason: reason}
	return &v.unknown
}

func readU64s(b []byte, n uint32, dst []uint64) []uint64 {
	if n > 16 {
		n = 16
	}
	for i := uint32(0); i < n; i++ {
		dst = append(dst, binary.LittleEndian.Uint64(b[8*i:]))
	}
	return dst
}
