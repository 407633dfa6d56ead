/*
 * CPL3 -> CPL0 requests. On the hosts this project targets, port I/O from
 * CPL3 faults after the guest's own iretq, so every port access goes
 * through the #UD trap: "ud2" with the request in RAX and arguments in
 * RDI/RSI, result in RAX (see cpu.c). Called at CPL0, the same functions
 * do the port access directly.
 */
#include "kernel.h"

static inline u64 request(u64 nr, u64 a, u64 b)
{
	u64 r;

	__asm__ volatile("ud2" : "=a"(r) : "a"(nr), "D"(a), "S"(b) : "memory");
	return r;
}

void sys_outb(u16 port, u8 v)
{
	if (cpl() == 0)
		outb(port, v);
	else
		request(SYS_OUTB, port, v);
}

u8 sys_inb(u16 port)
{
	return cpl() == 0 ? inb(port) : (u8)request(SYS_INB, port, 0);
}

void sys_outw(u16 port, u16 v)
{
	if (cpl() == 0)
		outw(port, v);
	else
		request(SYS_OUTW, port, v);
}

u16 sys_inw(u16 port)
{
	return cpl() == 0 ? inw(port) : (u16)request(SYS_INW, port, 0);
}

void sys_outl(u16 port, u32 v)
{
	if (cpl() == 0)
		outl(port, v);
	else
		request(SYS_OUTL, port, v);
}

u32 sys_inl(u16 port)
{
	return cpl() == 0 ? inl(port) : (u32)request(SYS_INL, port, 0);
}

void sys_write(const char *s, size_t n)
{
	if (cpl() == 0)
		con_write0(s, n);
	else
		request(SYS_WRITE, (u64)s, n);
}

void sys_exit(u8 code)
{
	if (cpl() == 0) {
		outb(0x501, code);
		for (;;)
			__asm__ volatile("cli; hlt");
	}
	request(SYS_EXIT, code, 0);
	for (;;)
		cpu_relax();
}

u64 sys_call0(u64 (*fn)(u64), u64 arg)
{
	if (cpl() == 0)
		return fn(arg);
	return request(SYS_CALL0, (u64)fn, arg);
}
