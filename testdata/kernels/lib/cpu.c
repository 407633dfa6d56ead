/*
 * CPL0 side: IDT/TSS setup (cpu_init0, called once by the entry code) and
 * the trap dispatcher. Everything in this file runs at CPL0, where some
 * hosts emulate every instruction, so it does as little as it can.
 *
 * CPL3 code asks for privileged work (port I/O, exit) by executing ud2
 * with a request number in RAX: the #UD handler recognises the ud2 opcode,
 * performs the request, puts the result in RAX and resumes after the ud2.
 * (A software interrupt through a DPL3 gate would be the usual choice, but
 * on some nested hosts "int N" at CPL3 raises #UD, and port I/O at CPL3
 * raises #GP even with IOPL 3; an invalid opcode traps the same everywhere.)
 */
#include "kernel.h"

struct idt_gate {
	u64 lo, hi;
};

struct tss {
	u32 reserved0;
	u64 rsp0, rsp1, rsp2;
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
} __attribute__((packed));

struct irq_slot {
	irq_handler_t fn;
	void *arg;
};

extern char trap_stubs[];
extern char kstack_top[];
extern u64 gdt[];

/* Written at CPL0 before the CPL3 code zeroes .bss: keep them in .data. */
__attribute__((section(".data"), aligned(16))) static struct idt_gate idt[256];
__attribute__((section(".data"), aligned(16))) static struct tss tss;
__attribute__((section(".data"))) static struct irq_slot irq_slots[256];

void cpu_init0(void)
{
	u64 base = (u64)trap_stubs;
	u64 t = (u64)&tss;
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (u64)idt};

	for (u32 v = 0; v < 256; v++) {
		u64 h = base + 16 * v;
		idt[v].lo = (h & 0xffff) | ((u64)SEL_KCODE << 16) | (0x8eULL << 40) | ((h >> 16) << 48);
	}

	tss.rsp0 = (u64)kstack_top;
	tss.iomap_base = sizeof(tss);
	gdt[SEL_TSS / 8] = (sizeof(tss) - 1) | ((t & 0xffffff) << 16) | (0x89ULL << 40) | ((t >> 24) << 56);
	gdt[SEL_TSS / 8 + 1] = t >> 32;
	__asm__ volatile("ltr %w0" ::"r"(SEL_TSS));
	__asm__ volatile("lidt %0" ::"m"(idtr));

	/* Mask both 8259 PICs: every interrupt goes through the IOAPIC. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
}

void irq_set_handler(u32 vector, irq_handler_t fn, void *arg)
{
	/* Plain memory, written from CPL3; read at CPL0 with interrupts off. */
	irq_slots[vector & 0xff].arg = arg;
	barrier();
	irq_slots[vector & 0xff].fn = fn;
}

__attribute__((noreturn)) static void exit0(u8 code)
{
	outb(0x501, code);
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void do_request(struct trap_frame *f)
{
	u16 port = (u16)f->rdi;

	switch (f->rax) {
	case SYS_WRITE:
		con_write0((const char *)f->rdi, f->rsi);
		f->rax = 0;
		break;
	case SYS_OUTB:
		outb(port, (u8)f->rsi);
		break;
	case SYS_INB:
		f->rax = inb(port);
		break;
	case SYS_OUTW:
		outw(port, (u16)f->rsi);
		break;
	case SYS_INW:
		f->rax = inw(port);
		break;
	case SYS_OUTL:
		outl(port, (u32)f->rsi);
		break;
	case SYS_INL:
		f->rax = inl(port);
		break;
	case SYS_EXIT:
		exit0((u8)f->rdi);
	case SYS_CALL0:
		f->rax = ((u64(*)(u64))f->rdi)(f->rsi);
		break;
	default:
		f->rax = (u64)-1;
	}
}

static void put_hex0(char *p, u64 v)
{
	for (int i = 15; i >= 0; i--, v >>= 4)
		p[i] = "0123456789abcdef"[v & 15];
}

__attribute__((noreturn)) static void fatal_trap(struct trap_frame *f)
{
	char msg[] = "trap: vector 0x................ error 0x................ rip 0x................ cs 0x................\n";

	put_hex0(msg + 15, f->vector);
	put_hex0(msg + 40, f->error);
	put_hex0(msg + 63, f->rip);
	put_hex0(msg + 85, f->cs);
	con_write0(msg, sizeof(msg) - 1);
	exit0(3);
}

void trap_dispatch(struct trap_frame *f)
{
	u32 v = (u32)f->vector;

	if (v == 6) {
		const u8 *ip = (const u8 *)f->rip;
		if (ip[0] == 0x0f && ip[1] == 0x0b) {
			f->rip += 2;
			do_request(f);
			return;
		}
		fatal_trap(f);
	}
	if (v < 32)
		fatal_trap(f);
	if (v == 0xff) /* LAPIC spurious vector: no EOI */
		return;
	if (irq_slots[v].fn)
		irq_slots[v].fn(v, irq_slots[v].arg);
	lapic_eoi();
}
