/*
 * The tiny kernels' common library. Code marked "CPL0" runs in trap
 * context (emulated on some hosts, so keep it short); everything else runs
 * at CPL3 and reaches CPL0 through sys_*() requests.
 */
#ifndef KERNEL_H
#define KERNEL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "defs.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define barrier() __asm__ volatile("" ::: "memory")
#define mb() __asm__ volatile("mfence" ::: "memory")

/* ---- string.c ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
/* parse_u64 parses decimal or 0x-hex digits from s[0..n); returns the
 * number of characters consumed (0 if none). */
size_t parse_u64(const char *s, size_t n, u64 *out);
/* parse_size parses a number with an optional K/M/G suffix. */
size_t parse_size(const char *s, size_t n, u64 *out);

/* ---- console.c ---- */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void con_write(const char *s, size_t n);
/* CPL0 only: write straight to the UART. */
void con_write0(const char *s, size_t n);

/* ---- sys.c: CPL3 -> CPL0 requests (also callable at CPL0) ---- */
static inline int cpl(void)
{
	u16 cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return cs & 3;
}
void sys_outb(u16 port, u8 v);
u8 sys_inb(u16 port);
void sys_outw(u16 port, u16 v);
u16 sys_inw(u16 port);
void sys_outl(u16 port, u32 v);
u32 sys_inl(u16 port);
void sys_write(const char *s, size_t n);
__attribute__((noreturn)) void sys_exit(u8 code);
/* sys_call0 runs fn(arg) at CPL0 and returns its result. */
u64 sys_call0(u64 (*fn)(u64), u64 arg);

/* Port I/O instructions, CPL0 only. */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* ---- cpu.c ---- */
struct trap_frame {
	u64 r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
	u64 vector, error, rip, cs, rflags, rsp, ss;
};
/* An interrupt handler runs at CPL0 with interrupts off; the library
 * sends the LAPIC EOI after it returns. Register with irq_set_handler
 * (vectors 0x20..0xfe). */
typedef void (*irq_handler_t)(u32 vector, void *arg);
void irq_set_handler(u32 vector, irq_handler_t fn, void *arg);

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* ---- boot.c ---- */
#define MAX_MEM_RANGES 128
struct mem_range {
	u64 addr, size;
	u32 type; /* 1 = usable RAM, as in e820 */
};
struct boot_info {
	int protocol; /* BOOT_LINUX or BOOT_PVH */
	const char *cmdline;
	u64 rsdp; /* ACPI RSDP address if the loader gave one, else 0 */
	int nmem;
	struct mem_range mem[MAX_MEM_RANGES];
};
extern struct boot_info boot;
u64 mem_usable_bytes(void);
/* cmdline_find returns the value of the first "name=value" token at or
 * after *pos (a cursor into the command line, start with 0) and advances
 * *pos past it; NULL when there is none. A bare "name" yields "". */
const char *cmdline_find(const char *name, size_t *pos, size_t *vlen);
/* cmdline_u64 and cmdline_str use the last occurrence of name. */
u64 cmdline_u64(const char *name, u64 def);
/* cmdline_str copies the value into buf (NUL-terminated); returns false
 * if absent. */
int cmdline_str(const char *name, char *buf, size_t size);

/* ---- apic.c (MMIO: usable at any CPL) ---- */
#define LAPIC_BASE 0xfee00000UL
#define IOAPIC_BASE 0xfec00000UL
void lapic_enable(void);
void lapic_eoi(void);
/* ioapic_route sends GSI gsi to vector on CPU 0, unmasked. A GSI beyond
 * the first IOAPIC's pins goes to a second IOAPIC at IOAPIC_BASE+0x10000
 * (the layout QEMU's microvm uses). */
int ioapic_route(u32 gsi, u8 vector, int level_triggered);
void ioapic_mask(u32 gsi);
/* ioapic_count returns how many IOAPICs answer (0, 1 or 2). */
int ioapic_count(void);

static inline u32 mmio_read32(u64 addr) { return *(volatile u32 *)addr; }
static inline void mmio_write32(u64 addr, u32 v) { *(volatile u32 *)addr = v; }
static inline u8 mmio_read8(u64 addr) { return *(volatile u8 *)addr; }
static inline u16 mmio_read16(u64 addr) { return *(volatile u16 *)addr; }

/* ---- provided by each kernel: runs at CPL3 ---- */
void kmain(void);

#endif
