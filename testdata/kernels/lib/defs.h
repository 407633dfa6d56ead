/* Constants shared by the assembly entry code and the C library. */
#ifndef DEFS_H
#define DEFS_H

#define SEL_KCODE32	0x08
#define SEL_KCODE	0x10
#define SEL_KDATA	0x18
#define SEL_UDATA	0x23
#define SEL_UCODE	0x2b
#define SEL_TSS		0x30

#define BOOT_LINUX	1	/* RSI = Linux boot_params ("zero page") */
#define BOOT_PVH	2	/* EBX = Xen hvm_start_info */

/* Requests from CPL3 to CPL0 (RAX = number, RDI/RSI/RDX = arguments). */
#define SYS_WRITE	0	/* write(buf, len) to the serial console */
#define SYS_OUTB	1	/* outb(port, value) */
#define SYS_INB		2	/* value = inb(port) */
#define SYS_OUTW	3
#define SYS_INW		4
#define SYS_OUTL	5
#define SYS_INL		6
#define SYS_EXIT	7	/* debug-exit(value), never returns */
#define SYS_CALL0	8	/* result = fn(arg), run at CPL0 */

#endif
