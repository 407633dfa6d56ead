/*
 * fault: announces itself, then triple faults (an empty IDT and a #UD),
 * which a VMM sees as a shutdown (KVM_EXIT_SHUTDOWN).
 */
#include "lib/kernel.h"

static u64 triple_fault(u64 unused)
{
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) empty = {0, 0};

	(void)unused;
	__asm__ volatile("lidt %0; ud2" ::"m"(empty));
	return 0;
}

void kmain(void)
{
	kprintf("fault: triple faulting\n");
	sys_call0(triple_fault, 0);
	kprintf("fault: still running\n");
	sys_exit(1);
}
