/* LAPIC and IOAPIC helpers. Both are MMIO, so they work at any CPL. */
#include "kernel.h"

#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0

#define IOREGSEL 0x00
#define IOWIN 0x10

void lapic_enable(void)
{
	mmio_write32(LAPIC_BASE + LAPIC_TPR, 0);
	mmio_write32(LAPIC_BASE + LAPIC_SVR, 0x100 | 0xff); /* enabled, spurious vector 0xff */
}

void lapic_eoi(void)
{
	mmio_write32(LAPIC_BASE + LAPIC_EOI, 0);
}

static u32 ioapic_read(u64 base, u32 reg)
{
	mmio_write32(base + IOREGSEL, reg);
	return mmio_read32(base + IOWIN);
}

static void ioapic_write(u64 base, u32 reg, u32 v)
{
	mmio_write32(base + IOREGSEL, reg);
	mmio_write32(base + IOWIN, v);
}

/* ioapic_pins returns the number of pins of the IOAPIC at base, 0 if
 * there is none (unassigned MMIO reads as all ones on some VMMs and as
 * zeroes on others; a real version register has a non-zero version). */
static u32 ioapic_pins(u64 base)
{
	u32 ver = ioapic_read(base, 1);

	if (ver == 0xffffffff || (ver & 0xff) == 0)
		return 0;
	return ((ver >> 16) & 0xff) + 1;
}

int ioapic_count(void)
{
	if (!ioapic_pins(IOAPIC_BASE))
		return 0;
	return ioapic_pins(IOAPIC_BASE + 0x10000) ? 2 : 1;
}

/* ioapic_pin finds which IOAPIC serves gsi and the pin on it. */
static int ioapic_pin(u32 gsi, u64 *base, u32 *pin)
{
	u64 b = IOAPIC_BASE;

	for (int i = 0; i < 2; i++, b += 0x10000) {
		u32 pins = ioapic_pins(b);
		if (!pins)
			return -1;
		if (gsi < pins) {
			*base = b;
			*pin = gsi;
			return 0;
		}
		gsi -= pins;
	}
	return -1;
}

int ioapic_route(u32 gsi, u8 vector, int level_triggered)
{
	u64 base;
	u32 pin;

	if (ioapic_pin(gsi, &base, &pin) < 0)
		return -1;
	/* Destination: APIC ID 0, physical mode. Low word last: it unmasks. */
	ioapic_write(base, 0x11 + 2 * pin, 0);
	ioapic_write(base, 0x10 + 2 * pin, vector | (level_triggered ? (1u << 15) : 0));
	return 0;
}

void ioapic_mask(u32 gsi)
{
	u64 base;
	u32 pin;

	if (ioapic_pin(gsi, &base, &pin) == 0)
		ioapic_write(base, 0x10 + 2 * pin, 1u << 16);
}
