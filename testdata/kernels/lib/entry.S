/*
 * Entry points, descriptor tables, page tables and trap stubs shared by
 * every tiny kernel.
 *
 * Two ways in, one common 64-bit path:
 *   _start     64-bit Linux boot protocol (long mode, RSI = boot_params)
 *   pvh_start  32-bit Xen PVH entry (protected mode, paging off,
 *              EBX = hvm_start_info), announced by the Xen ELF note below
 *
 * Everything here runs at CPL0, which some hosts emulate instruction by
 * instruction, so the work is kept to a few dozen instructions: the page
 * tables and GDT are static data, the IDT is filled by a short C loop
 * (cpu_init0), and the code then drops to CPL3 with iretq.
 */
#include "defs.h"

/* Xen PVH note: XEN_ELFNOTE_PHYS32_ENTRY, name "Xen", 8-byte address. */
	.section .note.Xen, "a"
	.balign 4
	.long 4			/* namesz */
	.long 8			/* descsz */
	.long 18		/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad pvh_start

	.section .text.entry, "ax"

	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	movl %ebx, %esi
	lgdt gdt_desc
	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	ljmp $SEL_KCODE32, $1f
1:	movl $pml4, %eax
	movl %eax, %cr3
	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $0xC0000080, %ecx		/* EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	ljmp $SEL_KCODE, $pvh64

	.code64
pvh64:
	movl %esi, %esi
	movl $BOOT_PVH, %edi
	jmp common64

	.globl _start
_start:
	cli
	cld
	movl $BOOT_LINUX, %edi
common64:
	lgdt gdt_desc(%rip)
	movq $pml4, %rax
	movq %rax, %cr3
	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	movq $kstack_top, %rsp
	pushq $SEL_KCODE
	pushq $1f
	lretq
1:	movl %edi, boot_kind(%rip)
	movq %rsi, boot_info_ptr(%rip)
	call cpu_init0
	/* Drop to CPL3: ss, rsp, rflags (IF=1, IOPL=0), cs, rip. */
	pushq $SEL_UDATA
	pushq $ustack_top
	pushq $0x202
	pushq $SEL_UCODE
	pushq $user_entry
	iretq

/* First code at CPL3: load user data segments, zero .bss, enter C. */
user_entry:
	movl $SEL_UDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movq $__bss_start, %rdi
	movq $__bss_end, %rcx
	subq %rdi, %rcx
	xorl %eax, %eax
	rep stosb
	call user_start
2:	pause
	jmp 2b

/*
 * Trap stubs: 256 of them, 16 bytes apart, so that cpu_init0 can compute
 * the address of stub N as trap_stubs + 16*N.
 */
	.balign 16
	.globl trap_stubs
trap_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp trap_common
	.set vec, vec + 1
	.endr

/* Only the registers a C call may clobber are saved (fewer emulated
 * instructions per trap); struct trap_frame mirrors this layout. */
trap_common:
	pushq %rax
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	movq %rsp, %rdi
	call trap_dispatch
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rax
	addq $16, %rsp
	iretq

/* --- data --- */
	.section .data.pagetables, "aw"
	.balign 4096
	/* Identity map of the first 4 GiB with 2 MiB pages, user accessible;
	 * the top GiB (MMIO: virtio, IOAPIC, LAPIC) uncached. */
	.globl pml4
pml4:
	.quad pdpt + 0x7
	.fill 511, 8, 0
pdpt:
	.quad pd0 + 0x0007
	.quad pd0 + 0x1007
	.quad pd0 + 0x2007
	.quad pd0 + 0x3007
	.fill 508, 8, 0
	.set pg, 0
pd0:
	.rept 2048
	.if pg < 1536
	.quad (pg << 21) | 0x87
	.else
	.quad (pg << 21) | 0x9f
	.endif
	.set pg, pg + 1
	.endr

	.data
	.balign 16
	.globl gdt
gdt:
	.quad 0				/* 0x00 null */
	.quad 0x00cf9b000000ffff	/* 0x08 kernel code, 32-bit */
	.quad 0x00af9b000000ffff	/* 0x10 kernel code, 64-bit */
	.quad 0x00cf93000000ffff	/* 0x18 kernel data */
	.quad 0x00cff3000000ffff	/* 0x20 user data (DPL3) */
	.quad 0x00affb000000ffff	/* 0x28 user code, 64-bit (DPL3) */
	.quad 0				/* 0x30 TSS, filled by cpu_init0 */
	.quad 0
gdt_end:
	.balign 8
	.globl gdt_desc
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt

	.globl boot_kind, boot_info_ptr
	.balign 8
boot_info_ptr:	.quad 0
boot_kind:	.long 0

	.section .stack, "aw", @nobits
	.balign 4096
	.space 16384
	.globl kstack_top
kstack_top:
	.space 65536
	.globl ustack_top
ustack_top:

	.section .note.GNU-stack, "", @progbits
