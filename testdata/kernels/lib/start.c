/* First C code at CPL3: gather boot information, run the kernel, exit. */
#include "kernel.h"

void boot_info_init(void);

void user_start(void)
{
	boot_info_init();
	kmain();
	sys_exit(0);
}
