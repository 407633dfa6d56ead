/*
 * Boot information, read at CPL3 from whichever structure the loader
 * passed: a Linux boot_params ("zero page") or a Xen PVH hvm_start_info.
 * Both end up as struct boot_info (command line + memory map).
 */
#include "kernel.h"

extern u32 boot_kind;
extern u64 boot_info_ptr;

struct boot_info boot;

/* Linux boot_params offsets. */
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_CMD_LINE_PTR 0x228
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128

/* struct hvm_start_info offsets. */
#define PVH_MAGIC 0x336ec578
#define PVH_VERSION 4
#define PVH_CMDLINE 24
#define PVH_RSDP 32
#define PVH_MEMMAP 40
#define PVH_MEMMAP_ENTRIES 48

static void add_range(u64 addr, u64 size, u32 type)
{
	if (boot.nmem < MAX_MEM_RANGES)
		boot.mem[boot.nmem++] = (struct mem_range){addr, size, type};
}

static void boot_linux(const u8 *bp)
{
	u64 cmd = *(const u32 *)(bp + BP_CMD_LINE_PTR) | (u64) * (const u32 *)(bp + BP_EXT_CMD_LINE_PTR) << 32;
	u32 n = bp[BP_E820_ENTRIES];

	boot.cmdline = cmd ? (const char *)cmd : "";
	boot.rsdp = *(const u64 *)(bp + BP_ACPI_RSDP_ADDR);
	if (n > BP_E820_MAX)
		n = BP_E820_MAX;
	for (u32 i = 0; i < n; i++) {
		const u8 *e = bp + BP_E820_TABLE + 20 * i;
		add_range(*(const u64 *)e, *(const u64 *)(e + 8), *(const u32 *)(e + 16));
	}
}

static void boot_pvh(const u8 *si)
{
	if (*(const u32 *)si != PVH_MAGIC) {
		boot.cmdline = "";
		return;
	}
	u64 cmd = *(const u64 *)(si + PVH_CMDLINE);
	boot.cmdline = cmd ? (const char *)cmd : "";
	boot.rsdp = *(const u64 *)(si + PVH_RSDP);
	if (*(const u32 *)(si + PVH_VERSION) < 1)
		return;
	const u8 *mm = (const u8 *)*(const u64 *)(si + PVH_MEMMAP);
	u32 n = *(const u32 *)(si + PVH_MEMMAP_ENTRIES);
	for (u32 i = 0; mm && i < n; i++) {
		const u8 *e = mm + 24 * i;
		add_range(*(const u64 *)e, *(const u64 *)(e + 8), *(const u32 *)(e + 16));
	}
}

void boot_info_init(void)
{
	boot.protocol = (int)boot_kind;
	if (boot_kind == BOOT_PVH)
		boot_pvh((const u8 *)boot_info_ptr);
	else
		boot_linux((const u8 *)boot_info_ptr);
}

u64 mem_usable_bytes(void)
{
	u64 total = 0;

	for (int i = 0; i < boot.nmem; i++)
		if (boot.mem[i].type == 1)
			total += boot.mem[i].size;
	return total;
}

const char *cmdline_find(const char *name, size_t *pos, size_t *vlen)
{
	const char *s = boot.cmdline;
	size_t nl = strlen(name);
	size_t i = *pos;

	while (s[i]) {
		while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')
			i++;
		size_t start = i;
		while (s[i] && s[i] != ' ' && s[i] != '\t' && s[i] != '\n')
			i++;
		size_t len = i - start;
		if (len >= nl && strncmp(s + start, name, nl) == 0) {
			if (len == nl) {
				*pos = i;
				*vlen = 0;
				return s + i;
			}
			if (s[start + nl] == '=') {
				*pos = i;
				*vlen = len - nl - 1;
				return s + start + nl + 1;
			}
		}
	}
	*pos = i;
	return NULL;
}

/* cmdline_last finds the last "name=value" (a later setting wins, as in
 * Linux). */
static const char *cmdline_last(const char *name, size_t *vlen)
{
	size_t pos = 0, n;
	const char *v, *last = NULL;

	while ((v = cmdline_find(name, &pos, &n))) {
		last = v;
		*vlen = n;
	}
	return last;
}

u64 cmdline_u64(const char *name, u64 def)
{
	size_t n = 0;
	const char *v = cmdline_last(name, &n);
	u64 x;

	if (v && parse_u64(v, n, &x) == n && n)
		return x;
	return def;
}

int cmdline_str(const char *name, char *buf, size_t size)
{
	size_t n = 0;
	const char *v = cmdline_last(name, &n);

	if (!v || !size)
		return 0;
	if (n > size - 1)
		n = size - 1;
	memcpy(buf, v, n);
	buf[n] = 0;
	return 1;
}
