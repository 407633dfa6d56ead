/*
 * startup_harness: the smallest direct KVM program that boots a govmm tiny
 * kernel the way govmm does, so that `govmm bench startup` can compare
 * govmm's startup time against a floor written in plain C.
 *
 * It does the essential work govmm does before the first guest instruction
 * and nothing more (see README.md for the exact list and the differences):
 *
 *   /dev/kvm, API version and capability checks; a VM with the TSS and
 *   identity-map addresses set; the in-kernel irqchip with both 8259 PICs
 *   masked and the PIT; guest RAM from a memfd mapped shared; the ELF64
 *   PT_LOAD segments copied in; the Linux 64-bit boot protocol state (GDT,
 *   identity page tables for 0..4 GiB, zero page with cmd_line_ptr and an
 *   e820 map, command line); one vCPU with the supported CPUID (plus the
 *   hypervisor bit), long-mode segment and control registers, RSI = zero
 *   page.
 *
 * At run time it handles exactly two ports: bytes written to COM1 (0x3f8)
 * go to stdout, one write(2) per guest OUT, as govmm's serial does; a byte
 * written to 0x501 ends the program with that byte as its exit status.
 *
 * usage: startup_harness [-m BYTES] [-c CMDLINE] KERNEL.elf
 *
 * The guest-physical layout matches govmm's boot/layout.go.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Guest-physical layout (same addresses as boot/layout.go). */
#define GDT_ADDR	0x0500
#define GDT_SIZE	(6 * 8)
#define IDT_ADDR	0x0540
#define TSS_ADDR	0x0580
#define TSS_SIZE	0x68
#define STACK_TOP	0x7000
#define ZERO_PAGE	0x7000
#define PML4_ADDR	0x9000
#define PDPT_ADDR	0xA000
#define PD_ADDR		0xB000
#define BOOT_END	0xF000
#define CMDLINE_ADDR	0x20000
#define CMDLINE_MAX	2048		/* NUL included */
#define EBDA_START	0x9FC00
#define HIGH_MEM	0x100000
#define GAP_START	0xC0000000ULL
#define GAP_END		0x100000000ULL
#define KVM_IDMAP_ADDR	0xFFFBC000
#define KVM_TSS_ADDR	0xFFFBD000

#define SEL_CS		0x10
#define SEL_DS		0x18
#define SEL_TR		0x20

/* Ports. */
#define PORT_COM1	0x3f8
#define PORT_COM1_LSR	0x3fd
#define PORT_DEBUG_EXIT	0x501

static void die(const char *what)
{
	fprintf(stderr, "startup_harness: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *msg)
{
	fprintf(stderr, "startup_harness: %s\n", msg);
	exit(1);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint8_t *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		die(path);
	if (fstat(fd, &st) < 0)
		die(path);
	uint8_t *buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		fail("out of memory");
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die(path);
		got += n;
	}
	close(fd);
	*len = got;
	return buf;
}

/* load_elf copies the PT_LOAD segments of an x86-64 ELF64 image into low
 * RAM (which is zero already, so p_memsz beyond p_filesz needs no work) and
 * returns the entry point. */
static uint64_t load_elf(uint8_t *low, uint64_t low_size, const uint8_t *img, size_t len)
{
	Elf64_Ehdr eh;
	if (len < sizeof(eh))
		fail("kernel: too short for an ELF64 header");
	memcpy(&eh, img, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_machine != EM_X86_64)
		fail("kernel: not an x86-64 ELF64 image");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > len ||
	    (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
		fail("kernel: bad program header table");
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, img + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		if (ph.p_filesz > ph.p_memsz || ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
			fail("kernel: PT_LOAD segment outside the file");
		if (ph.p_paddr < HIGH_MEM || ph.p_paddr > low_size || ph.p_memsz > low_size - ph.p_paddr)
			fail("kernel: PT_LOAD segment does not fit in guest memory above 1 MiB");
		memcpy(low + ph.p_paddr, img + ph.p_offset, ph.p_filesz);
	}
	return eh.e_entry;
}

/* A GDT descriptor for a flat segment or the low half of a 64-bit TSS. */
static uint64_t descriptor(uint64_t base, uint32_t limit, unsigned type, unsigned s,
			   unsigned l, unsigned db, unsigned g)
{
	uint64_t lim = g ? limit >> 12 : limit;
	return (lim & 0xffff) | (base & 0xffffff) << 16 | (uint64_t)(type & 0xf) << 40 |
	       (uint64_t)s << 44 | 1ULL << 47 /* present */ | (lim >> 16 & 0xf) << 48 |
	       (uint64_t)l << 53 | (uint64_t)db << 54 | (uint64_t)g << 55 |
	       (base >> 24 & 0xff) << 56;
}

static void write_boot_state(uint8_t *low, uint64_t mem_size, const char *cmdline)
{
	uint64_t low_size = mem_size < GAP_START ? mem_size : GAP_START;

	/* GDT: null, null, code 0x10, data 0x18, TSS 0x20 (two slots). */
	put64(low + GDT_ADDR + SEL_CS, descriptor(0, 0xffffffff, 0xb, 1, 1, 0, 1));
	put64(low + GDT_ADDR + SEL_DS, descriptor(0, 0xffffffff, 0x3, 1, 0, 1, 1));
	put64(low + GDT_ADDR + SEL_TR, descriptor(TSS_ADDR, TSS_SIZE - 1, 0xb, 0, 0, 0, 0));

	/* Identity map of 0..4 GiB with 2 MiB pages, present|write|user. */
	const uint64_t f = 0x7;
	put64(low + PML4_ADDR, PDPT_ADDR | f);
	for (int i = 0; i < 4; i++)
		put64(low + PDPT_ADDR + i * 8, (PD_ADDR + i * 0x1000) | f);
	for (uint64_t i = 0; i < 4 * 512; i++)
		put64(low + PD_ADDR + i * 8, i << 21 | f | 0x80);

	strcpy((char *)low + CMDLINE_ADDR, cmdline);

	/* Zero page (struct boot_params) with a boot protocol 2.12 header. */
	uint8_t *zp = low + ZERO_PAGE;
	put16(zp + 0x1fe, 0xaa55);		/* boot_flag */
	memcpy(zp + 0x202, "HdrS", 4);		/* header magic */
	put16(zp + 0x206, 0x020c);		/* version */
	zp[0x210] = 0xff;			/* type_of_loader: undefined */
	zp[0x211] = 0x01;			/* loadflags: LOADED_HIGH */
	put32(zp + 0x228, CMDLINE_ADDR);	/* cmd_line_ptr */
	put32(zp + 0x22c, 0x7fffffff);		/* initrd_addr_max */
	put32(zp + 0x238, CMDLINE_MAX - 1);	/* cmdline_size */
	put16(zp + 0x236, 0x1);			/* xloadflags: KERNEL_64 */

	/* e820: RAM below the EBDA, reserved to 1 MiB, RAM to the end of low
	 * memory, and RAM above 4 GiB for what does not fit below the gap. */
	struct { uint64_t addr, size; uint32_t type; } e[4];
	int n = 0;
	e[n++] = (typeof(e[0])){0, EBDA_START, 1};
	e[n++] = (typeof(e[0])){EBDA_START, HIGH_MEM - EBDA_START, 2};
	e[n++] = (typeof(e[0])){HIGH_MEM, low_size - HIGH_MEM, 1};
	if (mem_size > GAP_START)
		e[n++] = (typeof(e[0])){GAP_END, mem_size - GAP_START, 1};
	zp[0x1e8] = n;
	for (int i = 0; i < n; i++) {
		put64(zp + 0x2d0 + i * 20, e[i].addr);
		put64(zp + 0x2d0 + i * 20 + 8, e[i].size);
		put32(zp + 0x2d0 + i * 20 + 16, e[i].type);
	}
}

static void mask_pic(int vm, int chip)
{
	struct kvm_irqchip c = {.chip_id = chip};
	if (ioctl(vm, KVM_GET_IRQCHIP, &c) < 0)
		die("KVM_GET_IRQCHIP");
	c.chip.pic.imr = 0xff;
	if (ioctl(vm, KVM_SET_IRQCHIP, &c) < 0)
		die("KVM_SET_IRQCHIP");
}

static void set_cpuid(int kvm, int vcpu)
{
	int nent = 128;
	struct kvm_cpuid2 *c;
	for (;;) {
		c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		if (!c)
			fail("out of memory");
		c->nent = nent;
		if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		if (errno != E2BIG)
			die("KVM_GET_SUPPORTED_CPUID");
		free(c);
		nent *= 2;
	}
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == 1)
			c->entries[i].ecx |= 1u << 31;	/* hypervisor present */
	if (ioctl(vcpu, KVM_SET_CPUID2, c) < 0)
		die("KVM_SET_CPUID2");
	free(c);
}

static void set_entry_state(int vcpu, uint64_t rip)
{
	struct kvm_sregs s;
	if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0)
		die("KVM_GET_SREGS");
	struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = SEL_CS, .type = 0xb,
				 .present = 1, .s = 1, .l = 1, .g = 1};
	struct kvm_segment ds = {.base = 0, .limit = 0xffffffff, .selector = SEL_DS, .type = 0x3,
				 .present = 1, .db = 1, .s = 1, .g = 1};
	struct kvm_segment tr = {.base = TSS_ADDR, .limit = TSS_SIZE - 1, .selector = SEL_TR,
				 .type = 0xb, .present = 1};
	s.cs = cs;
	s.ds = s.es = s.fs = s.gs = s.ss = ds;
	s.tr = tr;
	s.gdt.base = GDT_ADDR;
	s.gdt.limit = GDT_SIZE - 1;
	s.idt.base = IDT_ADDR;
	s.idt.limit = 0;
	/* PE MP ET NE WP AM PG; PAE; LME LMA. */
	s.cr0 = 1u << 0 | 1u << 1 | 1u << 4 | 1u << 5 | 1u << 16 | 1u << 18 | 1u << 31;
	s.cr3 = PML4_ADDR;
	s.cr4 = 1u << 5;
	s.efer = 1u << 8 | 1u << 10;
	if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0)
		die("KVM_SET_SREGS");

	struct kvm_regs r = {.rip = rip, .rsi = ZERO_PAGE, .rsp = STACK_TOP, .rbp = STACK_TOP,
			     .rflags = 2};
	if (ioctl(vcpu, KVM_SET_REGS, &r) < 0)
		die("KVM_SET_REGS");
}

int main(int argc, char **argv)
{
	uint64_t mem_size = 128ULL << 20;
	const char *cmdline = "console=ttyS0";
	int opt;
	while ((opt = getopt(argc, argv, "m:c:")) != -1) {
		switch (opt) {
		case 'm': {
			char *end;
			errno = 0;
			mem_size = strtoull(optarg, &end, 0);
			if (errno || *end || mem_size <= HIGH_MEM)
				fail("-m: want a byte count above 1 MiB");
			break;
		}
		case 'c':
			cmdline = optarg;
			break;
		default:
			fprintf(stderr, "usage: startup_harness [-m BYTES] [-c CMDLINE] KERNEL.elf\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: startup_harness [-m BYTES] [-c CMDLINE] KERNEL.elf\n");
		return 2;
	}
	if (strlen(cmdline) >= CMDLINE_MAX)
		fail("-c: command line too long");
	mem_size &= ~0xfffULL;

	size_t img_len;
	uint8_t *img = read_file(argv[optind], &img_len);

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("open /dev/kvm");
	if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		fail("unexpected KVM API version");
	static const int caps[] = {KVM_CAP_USER_MEMORY, KVM_CAP_IRQCHIP, KVM_CAP_IOEVENTFD,
				   KVM_CAP_IRQFD, KVM_CAP_PIT2, KVM_CAP_SET_TSS_ADDR,
				   KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_IMMEDIATE_EXIT,
				   KVM_CAP_VCPU_EVENTS};
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		if (ioctl(kvm, KVM_CHECK_EXTENSION, caps[i]) <= 0)
			fail("KVM lacks a required capability");

	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
		die("KVM_SET_TSS_ADDR");
	uint64_t idmap = KVM_IDMAP_ADDR;
	if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		die("KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	mask_pic(vm, KVM_IRQCHIP_PIC_MASTER);
	mask_pic(vm, KVM_IRQCHIP_PIC_SLAVE);
	struct kvm_pit_config pit = {0};
	if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
		die("KVM_CREATE_PIT2");

	/* Guest RAM: a memfd mapped shared, as govmm does (so that a vhost-user
	 * backend could map it); low RAM at 0, the rest above the 4 GiB gap. */
	int memfd = memfd_create("startup-harness-ram", MFD_CLOEXEC);
	if (memfd < 0)
		die("memfd_create");
	if (ftruncate(memfd, mem_size) < 0)
		die("ftruncate guest RAM");
	uint8_t *ram = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, memfd, 0);
	if (ram == MAP_FAILED)
		die("mmap guest RAM");
	uint64_t low_size = mem_size < GAP_START ? mem_size : GAP_START;
	struct kvm_userspace_memory_region r0 = {.slot = 0, .guest_phys_addr = 0,
						 .memory_size = low_size, .userspace_addr = (uintptr_t)ram};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r0) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	if (mem_size > GAP_START) {
		struct kvm_userspace_memory_region r1 = {
			.slot = 1, .guest_phys_addr = GAP_END, .memory_size = mem_size - GAP_START,
			.userspace_addr = (uintptr_t)ram + GAP_START};
		if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r1) < 0)
			die("KVM_SET_USER_MEMORY_REGION");
	}

	uint64_t entry = load_elf(ram, low_size, img, img_len);
	write_boot_state(ram, mem_size, cmdline);

	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		die("KVM_GET_VCPU_MMAP_SIZE");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	set_cpuid(kvm, vcpu);
	set_entry_state(vcpu, entry);

	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			uint8_t *data = (uint8_t *)run + run->io.data_offset;
			size_t n = (size_t)run->io.size * run->io.count;
			if (run->io.direction == KVM_EXIT_IO_OUT) {
				if (run->io.port == PORT_COM1) {
					while (write(1, data, n) < 0 && errno == EINTR)
						;
				} else if (run->io.port == PORT_DEBUG_EXIT) {
					exit(data[0]);
				}
			} else {
				/* Nothing to read: the bus floats high, except the
				 * UART's line status (transmitter empty). */
				memset(data, run->io.port == PORT_COM1_LSR ? 0x60 : 0xff, n);
			}
			break;
		}
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0, sizeof(run->mmio.data));
			break;
		case KVM_EXIT_SHUTDOWN:
			fail("guest triple fault (KVM_EXIT_SHUTDOWN)");
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			fprintf(stderr, "startup_harness: KVM internal error, suberror %u\n",
				run->internal.suberror);
			return 1;
		default:
			fprintf(stderr, "startup_harness: unhandled exit reason %u\n", run->exit_reason);
			return 1;
		}
	}
}
