package vmm

import "encoding/binary"

// DemoGreeting is what the built-in demo kernel prints.
const DemoGreeting = "Hello from the govmm demo guest: it booted through the Linux 64-bit boot protocol.\n"

// DemoKernel returns the built-in demo kernel: a minimal ELF64 whose code
// prints DemoGreeting on COM1 one byte at a time and writes 0 to the
// debug-exit port. It is assembled here, byte by byte, so that `govmm run`
// works from a plain `go install`, with no C toolchain and no files.
func DemoKernel() []byte {
	code := []byte{
		0x48, 0x8d, 0x35, 0, 0, 0, 0, // lea rsi, [rip+msg]    (disp32 patched below)
		0xb9, 0, 0, 0, 0, // mov ecx, len             (imm32 patched below)
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xac,       // 1: lodsb
		0xee,       //    out dx, al
		0xe2, 0xfc, //    loop 1b
		0x66, 0xba, 0x01, 0x05, // mov dx, 0x501
		0x31, 0xc0, // xor eax, eax
		0xee,       // out dx, al           -> the VMM stops with status 0
		0xf4,       // 2: hlt
		0xeb, 0xfd, //    jmp 2b
	}
	binary.LittleEndian.PutUint32(code[3:], uint32(len(code)-7)) // msg follows the code
	binary.LittleEndian.PutUint32(code[8:], uint32(len(DemoGreeting)))
	return flatELF(append(code, DemoGreeting...))
}

// flatELF wraps position-independent 64-bit code in the smallest ELF64
// the loader accepts: one PT_LOAD segment at 1 MiB holding the headers and
// the code, entered at the first byte after the headers.
func flatELF(code []byte) []byte {
	const (
		loadAddr = 0x100000
		ehSize   = 64
		phSize   = 56
		codeOff  = ehSize + phSize
	)
	img := make([]byte, codeOff, codeOff+len(code))
	img = append(img, code...)
	le := binary.LittleEndian
	copy(img[0:], "\x7fELF")
	img[4], img[5], img[6] = 2, 1, 1 // ELFCLASS64, little-endian, version 1
	le.PutUint16(img[16:], 2)        // ET_EXEC
	le.PutUint16(img[18:], 62)       // EM_X86_64
	le.PutUint32(img[20:], 1)        // EV_CURRENT
	le.PutUint64(img[24:], loadAddr+codeOff)
	le.PutUint64(img[32:], ehSize) // e_phoff
	le.PutUint16(img[52:], ehSize)
	le.PutUint16(img[54:], phSize)
	le.PutUint16(img[56:], 1) // e_phnum
	ph := img[ehSize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // PF_R|PF_X
	le.PutUint64(ph[16:], loadAddr)
	le.PutUint64(ph[24:], loadAddr)
	le.PutUint64(ph[32:], uint64(len(img)))
	le.PutUint64(ph[40:], uint64(len(img)))
	le.PutUint64(ph[48:], 0x1000)
	return img
}
