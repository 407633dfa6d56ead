/*
 * hello: the smallest useful guest. Prints a banner, the command line and
 * the usable memory, proves it runs at CPL3, and exits through the
 * debug-exit port with hello.exit=N (default 0).
 */
#include "lib/kernel.h"

void kmain(void)
{
	kprintf("hello from govmm tiny kernel\n");
	kprintf("cmdline: %s\n", boot.cmdline);
	kprintf("memory: %lu MiB\n", (unsigned long)(mem_usable_bytes() >> 20));
	if (cpl() == 3)
		kprintf("cpl3: ok\n");
	else
		kprintf("cpl3: no (running at cpl %d)\n", cpl());
	sys_exit((u8)cmdline_u64("hello.exit", 0));
}
