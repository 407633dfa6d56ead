/*
 * netdrv: a virtio-net driver over virtio-mmio (version 2) that pings a
 * peer on every queue pair and reports one summary line:
 *
 *   netdrv: pairs=P sent=S replies=R
 *
 * then exits through debug-exit with 0 if every pair got every reply, else 1.
 *
 * Command line:
 *   virtio_mmio.device=<size>@<base>:<irq>   one per device (Linux syntax);
 *                      without any, the QEMU microvm MMIO window is probed
 *   netdrv.ip=A.B.C.D[/len]  our address (device d uses A.B.C.D+d)
 *   netdrv.peer=A.B.C.D      the peer to ping
 *   netdrv.pings=N           echo requests per queue pair (default 4)
 *   netdrv.pairs=K           use at most K queue pairs per device
 *   netdrv.mode=reflect      send N numbered frames per pair and expect them
 *                            back with the MAC addresses swapped, on the
 *                            same pair (peer MAC: netdrv.peermac, default
 *                            broadcast)
 *   netdrv.poll=1            poll the used rings (no interrupts)
 *   netdrv.event_idx=0       do not negotiate VIRTIO_RING_F_EVENT_IDX
 *   netdrv.irq=level|edge    IOAPIC trigger mode (default edge)
 *   netdrv.timeout=MS        give up after MS milliseconds (default 10000)
 *
 * All of it runs at CPL3 (MMIO works there); only the interrupt handler
 * runs at CPL0: it reads InterruptStatus, writes InterruptACK and bumps a
 * counter the CPL3 code waits on.
 */
#include "lib/kernel.h"

#define MAX_DEVS 4
#define MAX_PAIRS 32
#define MAX_PINGS 1024
#define QSIZE_MAX 256
#define BUF_SIZE 2048
#define HDR_LEN 12 /* struct virtio_net_hdr_v1 */
#define VEC_BASE 0x40

/* virtio-mmio registers */
#define VM_MAGIC 0x000
#define VM_VERSION 0x004
#define VM_DEVICE_ID 0x008
#define VM_DEVICE_FEATURES 0x010
#define VM_DEVICE_FEATURES_SEL 0x014
#define VM_DRIVER_FEATURES 0x020
#define VM_DRIVER_FEATURES_SEL 0x024
#define VM_QUEUE_SEL 0x030
#define VM_QUEUE_NUM_MAX 0x034
#define VM_QUEUE_NUM 0x038
#define VM_QUEUE_READY 0x044
#define VM_QUEUE_NOTIFY 0x050
#define VM_INTERRUPT_STATUS 0x060
#define VM_INTERRUPT_ACK 0x064
#define VM_STATUS 0x070
#define VM_QUEUE_DESC 0x080
#define VM_QUEUE_DRIVER 0x090
#define VM_QUEUE_DEVICE 0x0a0
#define VM_CONFIG_GENERATION 0x0fc
#define VM_CONFIG 0x100

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_FAILED 128

#define F_MAC (1ULL << 5)
#define F_MRG_RXBUF (1ULL << 15)
#define F_CTRL_VQ (1ULL << 17)
#define F_MQ (1ULL << 22)
#define F_EVENT_IDX (1ULL << 29)
#define F_VERSION_1 (1ULL << 32)

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define AVAIL_F_NO_INTERRUPT 1
#define USED_F_NO_NOTIFY 1

#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define ETH_REFLECT 0x88b5 /* IEEE local experimental */

#define ICMP_ID_BASE 0x4700
#define REFLECT_MAGIC 0x474f564dU /* "GOVM" */
#define REFLECT_LEN 128

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct vq {
	u16 index, size;
	volatile struct vring_desc *desc;
	volatile u16 *avail; /* flags, idx, ring[size], used_event */
	volatile u8 *used;   /* flags, idx, {u32 id, u32 len}[size], avail_event */
	u16 avail_idx, kicked_idx, last_used;
	u8 *bufs;
	u16 free[QSIZE_MAX];
	int nfree;
};

struct dev {
	int n;
	u64 base;
	u32 gsi;
	u64 features;
	u8 mac[6];
	u32 ip;
	int max_pairs, pairs;
	struct vq rx[MAX_PAIRS], tx[MAX_PAIRS], ctrl;
	volatile u32 irqs;
	int ok;
};

struct pair_state {
	struct dev *dev;
	int q;
	u16 id;
	u32 sent, replies, rx_frames;
	u8 got[MAX_PINGS / 8];
};

static struct dev devs[MAX_DEVS];
static int ndevs;
static struct pair_state pairs[MAX_DEVS * MAX_PAIRS];
static int npairs;

static struct {
	u32 ip, peer;
	u32 pings;
	u32 max_pairs;
	int reflect, poll, level, no_event_idx;
	u8 peer_mac[6];
	int have_peer_mac;
	u64 tsc_hz;
	u64 rx_frames, rx_bad;
} cfg;

static u8 scratch[65536 + HDR_LEN];

/* ---------- small helpers ---------- */

static u64 arena_cur, arena_end;

static void arena_init(void)
{
	extern char __image_end[];
	u64 start = ((u64)__image_end + 0xfff) & ~0xfffULL;

	for (int i = 0; i < boot.nmem; i++) {
		struct mem_range *m = &boot.mem[i];
		if (m->type == 1 && m->addr <= start && start < m->addr + m->size) {
			arena_cur = start;
			arena_end = m->addr + m->size;
			if (arena_end > 0xc0000000ULL)
				arena_end = 0xc0000000ULL;
			return;
		}
	}
}

static void *alloc(u64 size)
{
	u64 p = arena_cur;

	size = (size + 0xfff) & ~0xfffULL;
	if (!p || p + size > arena_end)
		return NULL;
	arena_cur += size;
	memset((void *)p, 0, size);
	return (void *)p;
}

static void cpuid(u32 leaf, u32 sub, u32 r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/* tsc_freq guesses the TSC rate from CPUID; 3 GHz if nothing says. */
static u64 tsc_freq(void)
{
	u32 r[4];

	cpuid(0, 0, r);
	u32 max = r[0];
	if (max >= 0x15) {
		cpuid(0x15, 0, r);
		if (r[0] && r[1] && r[2])
			return (u64)r[2] * r[1] / r[0];
	}
	if (max >= 0x16) {
		cpuid(0x16, 0, r);
		if (r[0] & 0xffff)
			return (u64)(r[0] & 0xffff) * 1000000;
	}
	cpuid(0x40000000, 0, r);
	if (r[0] >= 0x40000010 && r[0] < 0x40000100) {
		cpuid(0x40000010, 0, r);
		if (r[0])
			return (u64)r[0] * 1000;
	}
	return 3000000000ULL;
}

static u64 ms_to_tsc(u64 ms)
{
	return cfg.tsc_hz / 1000 * ms;
}

static u16 be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static u32 be32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }
static void put16(u8 *p, u16 v)
{
	p[0] = v >> 8;
	p[1] = (u8)v;
}
static void put32(u8 *p, u32 v)
{
	put16(p, v >> 16);
	put16(p + 2, (u16)v);
}

static u16 csum(const u8 *p, size_t n)
{
	u32 s = 0;

	for (; n > 1; n -= 2, p += 2)
		s += (u32)p[0] << 8 | p[1];
	if (n)
		s += (u32)p[0] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (u16)~s;
}

static size_t parse_ip(const char *s, size_t n, u32 *ip)
{
	size_t i = 0;
	u32 v = 0;

	for (int k = 0; k < 4; k++) {
		u64 b;
		size_t m;
		if (k) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
		m = parse_u64(s + i, n - i, &b);
		if (!m || b > 255 || (m > 1 && s[i] == '0' && s[i + 1] == 'x'))
			return 0;
		i += m;
		v = v << 8 | (u32)b;
	}
	*ip = v;
	return i;
}

static int parse_mac(const char *s, size_t n, u8 mac[6])
{
	if (n != 17)
		return 0;
	for (int i = 0; i < 6; i++) {
		u64 b = 0;
		for (int j = 0; j < 2; j++) {
			char c = s[3 * i + j];
			int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
			if (d < 0)
				return 0;
			b = b * 16 + d;
		}
		if (i < 5 && s[3 * i + 2] != ':')
			return 0;
		mac[i] = (u8)b;
	}
	return 1;
}

/* ---------- virtqueues (driver side) ---------- */

static inline volatile u16 *used_idx_p(struct vq *q) { return (volatile u16 *)(q->used + 2); }
static inline volatile u16 *used_event_p(struct vq *q) { return &q->avail[2 + q->size]; }
static inline volatile u16 *avail_event_p(struct vq *q) { return (volatile u16 *)(q->used + 4 + 8 * q->size); }

static int vq_setup(struct dev *d, struct vq *q, u16 index)
{
	u64 b = d->base;

	mmio_write32(b + VM_QUEUE_SEL, index);
	if (mmio_read32(b + VM_QUEUE_READY))
		return -1;
	u32 max = mmio_read32(b + VM_QUEUE_NUM_MAX);
	if (!max)
		return -1;
	u16 size = QSIZE_MAX;
	while (size > max)
		size >>= 1;
	q->index = index;
	q->size = size;
	q->desc = alloc(16 * size);
	q->avail = alloc(6 + 2 * size);
	q->used = alloc(6 + 8 * size);
	q->bufs = alloc((u64)BUF_SIZE * size);
	if (!q->desc || !q->avail || !q->used || !q->bufs)
		return -2;
	for (u16 i = 0; i < size; i++) {
		q->desc[i].addr = (u64)(q->bufs + (u64)BUF_SIZE * i);
		q->free[i] = size - 1 - i;
	}
	q->nfree = size;
	mmio_write32(b + VM_QUEUE_NUM, size);
	mmio_write32(b + VM_QUEUE_DESC, (u32)(u64)q->desc);
	mmio_write32(b + VM_QUEUE_DESC + 4, (u32)((u64)q->desc >> 32));
	mmio_write32(b + VM_QUEUE_DRIVER, (u32)(u64)q->avail);
	mmio_write32(b + VM_QUEUE_DRIVER + 4, (u32)((u64)q->avail >> 32));
	mmio_write32(b + VM_QUEUE_DEVICE, (u32)(u64)q->used);
	mmio_write32(b + VM_QUEUE_DEVICE + 4, (u32)((u64)q->used >> 32));
	mmio_write32(b + VM_QUEUE_READY, 1);
	if (cfg.poll && !(d->features & F_EVENT_IDX))
		q->avail[0] = AVAIL_F_NO_INTERRUPT;
	return 0;
}

/* vq_push makes descriptor head available (not yet notified). */
static void vq_push(struct vq *q, u16 head)
{
	q->avail[2 + (q->avail_idx % q->size)] = head;
	q->avail_idx++;
}

/* vq_kick publishes the pushed heads and notifies the device if needed. */
static void vq_kick(struct dev *d, struct vq *q)
{
	u16 old = q->kicked_idx, new = q->avail_idx;

	if (old == new)
		return;
	mb();
	q->avail[1] = new;
	q->kicked_idx = new;
	mb();
	int need;
	if (d->features & F_EVENT_IDX) {
		u16 ev = *avail_event_p(q);
		need = (u16)(new - ev - 1) < (u16)(new - old);
	} else {
		need = !(*(volatile u16 *)q->used & USED_F_NO_NOTIFY);
	}
	if (need)
		mmio_write32(d->base + VM_QUEUE_NOTIFY, q->index);
}

/* vq_next_used returns the next used element's head (and length), or -1. */
static int vq_next_used(struct vq *q, u32 *len)
{
	if (*used_idx_p(q) == q->last_used)
		return -1;
	barrier();
	__asm__ volatile("lfence" ::: "memory");
	volatile u8 *e = q->used + 4 + 8 * (q->last_used % q->size);
	u32 id = *(volatile u32 *)e;
	*len = *(volatile u32 *)(e + 4);
	q->last_used++;
	if (id >= q->size)
		return -1;
	return (int)id;
}

/* vq_rearm asks for an interrupt at the next used element; returns true
 * if more elements arrived meanwhile (the caller must look again). */
static int vq_rearm(struct dev *d, struct vq *q)
{
	if (d->features & F_EVENT_IDX) {
		*used_event_p(q) = cfg.poll ? (u16)(q->last_used - 0x8000) : q->last_used;
		mb();
	}
	return *used_idx_p(q) != q->last_used;
}

static void tx_reclaim(struct vq *q)
{
	u32 len;
	int id;

	while ((id = vq_next_used(q, &len)) >= 0)
		if (q->nfree < q->size)
			q->free[q->nfree++] = (u16)id;
}

static int poll_all(void);
static int polling; /* poll_all is running (tx_get must not recurse) */

/* tx_get returns a free TX descriptor's buffer (after the virtio-net
 * header), waiting a little for the device to complete earlier ones. */
static u8 *tx_get(struct vq *q, u16 *head)
{
	u64 until = rdtsc() + ms_to_tsc(1000);

	while (!q->nfree) {
		tx_reclaim(q);
		if (q->nfree)
			break;
		if (!polling)
			poll_all();
		if (rdtsc() > until)
			return NULL;
		cpu_relax();
	}
	*head = q->free[--q->nfree];
	u8 *buf = q->bufs + (u64)BUF_SIZE * *head;
	memset(buf, 0, HDR_LEN);
	return buf + HDR_LEN;
}

static void tx_send(struct dev *d, struct vq *q, u16 head, u32 frame_len)
{
	q->desc[head].len = HDR_LEN + frame_len;
	q->desc[head].flags = 0;
	vq_push(q, head);
	vq_kick(d, q);
}

/* ---------- device setup ---------- */

static void virtio_irq(u32 vector, void *arg)
{
	/* CPL0: two MMIO accesses and a counter, nothing else. */
	struct dev *d = arg;
	u32 st = mmio_read32(d->base + VM_INTERRUPT_STATUS);

	(void)vector;
	if (st)
		mmio_write32(d->base + VM_INTERRUPT_ACK, st);
	d->irqs++;
}

static void set_status(struct dev *d, u32 s)
{
	mmio_write32(d->base + VM_STATUS, s);
}

static int ctrl_mq_pairs(struct dev *d, u16 n)
{
	struct vq *q = &d->ctrl;
	u8 *b0 = q->bufs, *b1 = q->bufs + BUF_SIZE, *b2 = q->bufs + 2 * BUF_SIZE;

	b0[0] = 4; /* VIRTIO_NET_CTRL_MQ */
	b0[1] = 0; /* VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET */
	b1[0] = (u8)n;
	b1[1] = (u8)(n >> 8);
	b2[0] = 0xff;
	q->desc[0] = (struct vring_desc){(u64)b0, 2, DESC_F_NEXT, 1};
	q->desc[1] = (struct vring_desc){(u64)b1, 2, DESC_F_NEXT, 2};
	q->desc[2] = (struct vring_desc){(u64)b2, 1, DESC_F_WRITE, 0};
	vq_push(q, 0);
	vq_kick(d, q);
	u64 until = rdtsc() + ms_to_tsc(2000);
	u32 len;
	while (vq_next_used(q, &len) < 0) {
		if (rdtsc() > until)
			return -1;
		cpu_relax();
	}
	return *(volatile u8 *)b2 == 0 ? 0 : -2;
}

static const char *dev_init(struct dev *d)
{
	u64 b = d->base;

	if (mmio_read32(b + VM_MAGIC) != 0x74726976)
		return "no virtio-mmio magic";
	u32 ver = mmio_read32(b + VM_VERSION);
	if (ver != 2)
		return ver == 1 ? "legacy virtio-mmio (version 1) not supported" : "unknown virtio-mmio version";
	if (mmio_read32(b + VM_DEVICE_ID) != 1)
		return "not a network device";

	set_status(d, 0);
	set_status(d, STATUS_ACKNOWLEDGE);
	set_status(d, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
	mmio_write32(b + VM_DEVICE_FEATURES_SEL, 0);
	u64 feat = mmio_read32(b + VM_DEVICE_FEATURES);
	mmio_write32(b + VM_DEVICE_FEATURES_SEL, 1);
	feat |= (u64)mmio_read32(b + VM_DEVICE_FEATURES) << 32;
	if (!(feat & F_VERSION_1)) {
		set_status(d, STATUS_FAILED);
		return "device does not offer VERSION_1";
	}
	u64 want = F_VERSION_1 | F_MAC | F_MRG_RXBUF | F_CTRL_VQ | F_EVENT_IDX;
	if (cfg.no_event_idx)
		want &= ~F_EVENT_IDX;
	if (feat & F_CTRL_VQ)
		want |= F_MQ;
	d->features = feat & want;
	mmio_write32(b + VM_DRIVER_FEATURES_SEL, 0);
	mmio_write32(b + VM_DRIVER_FEATURES, (u32)d->features);
	mmio_write32(b + VM_DRIVER_FEATURES_SEL, 1);
	mmio_write32(b + VM_DRIVER_FEATURES, (u32)(d->features >> 32));
	set_status(d, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
	if (!(mmio_read32(b + VM_STATUS) & STATUS_FEATURES_OK)) {
		set_status(d, STATUS_FAILED);
		return "device rejected FEATURES_OK";
	}

	u32 gen;
	do {
		gen = mmio_read32(b + VM_CONFIG_GENERATION);
		for (int i = 0; i < 6; i++)
			d->mac[i] = mmio_read8(b + VM_CONFIG + i);
		d->max_pairs = (d->features & F_MQ) ? mmio_read16(b + VM_CONFIG + 8) : 1;
	} while (gen != mmio_read32(b + VM_CONFIG_GENERATION));
	if (!(d->features & F_MAC)) {
		static const u8 local[6] = {0x52, 0x54, 0x00, 0x47, 0x56, 0x00};
		memcpy(d->mac, local, 6);
		d->mac[5] = (u8)d->n;
	}
	if (d->max_pairs < 1)
		d->max_pairs = 1;
	d->pairs = d->max_pairs;
	if (d->pairs > MAX_PAIRS)
		d->pairs = MAX_PAIRS;
	if (cfg.max_pairs && d->pairs > (int)cfg.max_pairs)
		d->pairs = (int)cfg.max_pairs;

	for (int i = 0; i < d->pairs; i++) {
		if (vq_setup(d, &d->rx[i], 2 * i) || vq_setup(d, &d->tx[i], 2 * i + 1)) {
			set_status(d, STATUS_FAILED);
			return "queue setup failed";
		}
	}
	if (d->features & F_CTRL_VQ) {
		u16 ci = (d->features & F_MQ) ? 2 * d->max_pairs : 2;
		if (vq_setup(d, &d->ctrl, ci)) {
			set_status(d, STATUS_FAILED);
			return "control queue setup failed";
		}
	}

	/* Post every RX buffer. */
	for (int i = 0; i < d->pairs; i++) {
		struct vq *q = &d->rx[i];
		for (u16 k = 0; k < q->size; k++) {
			q->desc[k].len = BUF_SIZE;
			q->desc[k].flags = DESC_F_WRITE;
			vq_push(q, k);
		}
		q->nfree = 0;
		vq_rearm(d, q);
	}

	if (!cfg.poll) {
		u8 vec = (u8)(VEC_BASE + d->n);
		irq_set_handler(vec, virtio_irq, d);
		if (ioapic_route(d->gsi, vec, cfg.level) < 0) {
			set_status(d, STATUS_FAILED);
			return "no IOAPIC pin for the device's IRQ";
		}
	}

	set_status(d, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
	for (int i = 0; i < d->pairs; i++)
		vq_kick(d, &d->rx[i]);

	if ((d->features & F_MQ) && ctrl_mq_pairs(d, (u16)d->pairs))
		return "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET failed";
	return NULL;
}

static void add_dev(u64 base, u32 gsi)
{
	if (ndevs >= MAX_DEVS)
		return;
	struct dev *d = &devs[ndevs];
	d->n = ndevs++;
	d->base = base;
	d->gsi = gsi;
}

/* find_devices reads virtio_mmio.device= entries, or probes QEMU microvm's
 * window (0xfeb00000, 512 bytes per slot). There microvm describes the
 * devices in ACPI instead of the command line; its IRQs are: 24 slots on
 * IRQs 24..47 when a second IOAPIC is present, else 8 slots on IRQs
 * 16..23 with ACPI or 5..12 without. */
static void find_devices(void)
{
	size_t pos = 0, n;
	const char *v;

	while ((v = cmdline_find("virtio_mmio.device", &pos, &n))) {
		u64 size, base, irq;
		size_t i = parse_size(v, n, &size);
		if (!i || i >= n || v[i] != '@')
			continue;
		i++;
		size_t m = parse_u64(v + i, n - i, &base);
		if (!m || i + m >= n || v[i + m] != ':')
			continue;
		i += m + 1;
		if (!parse_u64(v + i, n - i, &irq))
			continue;
		add_dev(base, (u32)irq);
	}
	if (ndevs)
		return;
	int ioapic2 = ioapic_count() == 2;
	u32 irq_base = ioapic2 ? 24 : boot.rsdp ? 16 : 5;
	for (u32 slot = 0; slot < (ioapic2 ? 24u : 8u); slot++) {
		u64 b = 0xfeb00000ULL + 0x200ULL * slot;
		if (mmio_read32(b) == 0x74726976 && mmio_read32(b + VM_DEVICE_ID) == 1)
			add_dev(b, irq_base + slot);
	}
}

/* ---------- frames ---------- */

static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static u32 eth_hdr(u8 *f, const u8 *dst, const u8 *src, u16 type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	put16(f + 12, type);
	return 14;
}

static u32 build_arp(u8 *f, struct dev *d, u16 op, const u8 *tha, u32 tip)
{
	u32 n = eth_hdr(f, op == 1 ? bcast : tha, d->mac, ETH_ARP);
	u8 *a = f + n;

	put16(a, 1);
	put16(a + 2, ETH_IP);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, op);
	memcpy(a + 8, d->mac, 6);
	put32(a + 14, d->ip);
	memcpy(a + 18, op == 1 ? (const u8 *)"\0\0\0\0\0\0" : tha, 6);
	put32(a + 24, tip);
	return 60; /* padded to the Ethernet minimum */
}

static u32 build_echo(u8 *f, struct dev *d, u16 id, u16 seq)
{
	u32 n = eth_hdr(f, cfg.peer_mac, d->mac, ETH_IP);
	u8 *ip = f + n, *ic = ip + 20;
	const u32 payload = 56;

	ip[0] = 0x45;
	ip[1] = 0;
	put16(ip + 2, 20 + 8 + payload);
	put16(ip + 4, seq);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = 1; /* ICMP */
	put16(ip + 10, 0);
	put32(ip + 12, d->ip);
	put32(ip + 16, cfg.peer);
	put16(ip + 10, csum(ip, 20));
	ic[0] = 8; /* echo request */
	ic[1] = 0;
	put16(ic + 2, 0);
	put16(ic + 4, id);
	put16(ic + 6, seq);
	for (u32 i = 0; i < payload; i++)
		ic[8 + i] = (u8)(i + seq + id);
	put16(ic + 2, csum(ic, 8 + payload));
	return n + 20 + 8 + payload;
}

static u32 build_reflect(u8 *f, struct dev *d, struct pair_state *p, u32 seq)
{
	u32 n = eth_hdr(f, cfg.peer_mac, d->mac, ETH_REFLECT);
	u8 *b = f + n;

	put32(b, REFLECT_MAGIC);
	put16(b + 4, p->id);
	put32(b + 6, seq);
	for (u32 i = 10; i < REFLECT_LEN - n; i++)
		b[i] = (u8)(i * 7 + seq * 13 + p->id);
	return REFLECT_LEN;
}

static struct pair_state *pair_by_id(u16 id)
{
	u32 i = (u32)(id - ICMP_ID_BASE);

	return i < (u32)npairs ? &pairs[i] : NULL;
}

static void mark(struct pair_state *p, u32 seq)
{
	if (seq < 1 || seq > cfg.pings)
		return;
	u32 bit = seq - 1;
	if (p->got[bit / 8] & (1u << (bit % 8)))
		return;
	p->got[bit / 8] |= (u8)(1u << (bit % 8));
	p->replies++;
}

static void handle_arp(struct dev *d, int q, const u8 *f, u32 len)
{
	const u8 *a = f + 14;

	if (len < 14 + 28 || be16(a) != 1 || be16(a + 2) != ETH_IP || a[4] != 6 || a[5] != 4)
		return;
	u16 op = be16(a + 6);
	u32 sip = be32(a + 14), tip = be32(a + 24);
	if (op == 2 && sip == cfg.peer && tip == d->ip && !cfg.have_peer_mac) {
		memcpy(cfg.peer_mac, a + 8, 6);
		cfg.have_peer_mac = 1;
	} else if (op == 1 && tip == d->ip) {
		u16 head;
		u8 *t = tx_get(&d->tx[q], &head);
		if (t)
			tx_send(d, &d->tx[q], head, build_arp(t, d, 2, a + 8, sip));
	}
}

static void handle_ip(struct dev *d, const u8 *f, u32 len)
{
	const u8 *ip = f + 14;

	if (len < 14 + 20 || (ip[0] >> 4) != 4)
		return;
	u32 ihl = (ip[0] & 15) * 4u;
	u32 tot = be16(ip + 2);
	if (ihl < 20 || tot < ihl + 8 || 14 + tot > len || csum(ip, ihl) != 0) {
		cfg.rx_bad++;
		return;
	}
	if (ip[9] != 1 || be32(ip + 12) != cfg.peer || be32(ip + 16) != d->ip)
		return;
	const u8 *ic = ip + ihl;
	u32 icl = tot - ihl;
	if (ic[0] != 0 || ic[1] != 0)
		return;
	if (csum(ic, icl) != 0) {
		cfg.rx_bad++;
		return;
	}
	u16 id = be16(ic + 4), seq = be16(ic + 6);
	struct pair_state *p = pair_by_id(id);
	if (!p || p->dev != d || icl != 8 + 56)
		return;
	for (u32 i = 0; i < 56; i++)
		if (ic[8 + i] != (u8)(i + seq + id)) {
			cfg.rx_bad++;
			return;
		}
	mark(p, seq);
}

static void handle_reflect(struct dev *d, int q, const u8 *f, u32 len)
{
	if (len < REFLECT_LEN || memcmp(f, d->mac, 6) != 0 || memcmp(f + 6, cfg.peer_mac, 6) != 0)
		return;
	const u8 *b = f + 14;
	if (be32(b) != REFLECT_MAGIC)
		return;
	struct pair_state *p = pair_by_id(be16(b + 4));
	u32 seq = be32(b + 6);
	if (!p || p->dev != d || p->q != q) {
		cfg.rx_bad++;
		return;
	}
	for (u32 i = 10; i < REFLECT_LEN - 14; i++)
		if (b[i] != (u8)(i * 7 + seq * 13 + p->id)) {
			cfg.rx_bad++;
			return;
		}
	mark(p, seq);
}

static void handle_frame(struct dev *d, int q, const u8 *f, u32 len)
{
	cfg.rx_frames++;
	if (len < 14)
		return;
	switch (be16(f + 12)) {
	case ETH_ARP:
		handle_arp(d, q, f, len);
		break;
	case ETH_IP:
		if (!cfg.reflect)
			handle_ip(d, f, len);
		break;
	case ETH_REFLECT:
		if (cfg.reflect)
			handle_reflect(d, q, f, len);
		break;
	}
}

/* poll_rx consumes every used RX buffer of one queue, reassembling
 * mergeable buffers, and posts the buffers again. Returns the number of
 * frames seen. */
static int poll_rx(struct dev *d, int qi)
{
	struct vq *q = &d->rx[qi];
	int frames = 0;
	u32 len;
	int id;

	do {
		while ((id = vq_next_used(q, &len)) >= 0) {
			u8 *buf = q->bufs + (u64)BUF_SIZE * id;
			if (len > BUF_SIZE)
				len = BUF_SIZE;
			u32 nbuf = (d->features & F_MRG_RXBUF) && len >= HDR_LEN ? buf[10] | buf[11] << 8 : 1;
			const u8 *frame = buf + HDR_LEN;
			u32 flen = len >= HDR_LEN ? len - HDR_LEN : 0;
			vq_push(q, (u16)id);
			if (nbuf > 1) {
				/* Gather the continuation buffers into scratch. */
				u32 total = flen;
				memcpy(scratch, frame, flen);
				for (u32 k = 1; k < nbuf; k++) {
					u64 until = rdtsc() + ms_to_tsc(100);
					while ((id = vq_next_used(q, &len)) < 0 && rdtsc() < until)
						cpu_relax();
					if (id < 0)
						break;
					if (len > BUF_SIZE)
						len = BUF_SIZE;
					if (total + len <= sizeof(scratch)) {
						memcpy(scratch + total, q->bufs + (u64)BUF_SIZE * id, len);
						total += len;
					}
					vq_push(q, (u16)id);
				}
				frame = scratch;
				flen = total;
			}
			handle_frame(d, qi, frame, flen);
			frames++;
			for (int k = 0; k < npairs; k++)
				if (pairs[k].dev == d && pairs[k].q == qi)
					pairs[k].rx_frames++;
		}
		vq_kick(d, q);
	} while (vq_rearm(d, q));
	return frames;
}

static int poll_all(void)
{
	int n = 0;

	polling = 1;
	for (int i = 0; i < ndevs; i++) {
		struct dev *d = &devs[i];
		if (!d->ok)
			continue;
		for (int k = 0; k < d->pairs; k++) {
			n += poll_rx(d, k);
			tx_reclaim(&d->tx[k]);
		}
	}
	polling = 0;
	return n;
}

static u32 irq_total(void)
{
	u32 n = 0;

	for (int i = 0; i < ndevs; i++)
		n += devs[i].irqs;
	return n;
}

/* run_until processes received frames until done() or the deadline. In
 * interrupt mode it waits for the interrupt counter between rounds. */
static int run_until(int (*done)(void), u64 deadline)
{
	for (;;) {
		u32 seen = irq_total();
		int got = poll_all();
		if (done())
			return 1;
		if (rdtsc() >= deadline)
			return 0;
		if (got)
			continue;
		if (cfg.poll) {
			cpu_relax();
			continue;
		}
		while (irq_total() == seen && rdtsc() < deadline)
			cpu_relax();
	}
}

static int have_peer(void) { return cfg.have_peer_mac; }

static int all_replies(void)
{
	for (int i = 0; i < npairs; i++)
		if (pairs[i].replies < cfg.pings)
			return 0;
	return 1;
}

static void send_round(u32 seq)
{
	for (int i = 0; i < npairs; i++) {
		struct pair_state *p = &pairs[i];
		struct vq *q = &p->dev->tx[p->q];
		u16 head;
		u8 *f = tx_get(q, &head);
		if (!f)
			continue;
		u32 len = cfg.reflect ? build_reflect(f, p->dev, p, seq) : build_echo(f, p->dev, p->id, (u16)seq);
		tx_send(p->dev, q, head, len);
		p->sent++;
	}
}

void kmain(void)
{
	char mode[16] = "";
	u64 t_start = rdtsc();

	cfg.tsc_hz = tsc_freq();
	cfg.pings = (u32)cmdline_u64("netdrv.pings", 4);
	if (cfg.pings > MAX_PINGS)
		cfg.pings = MAX_PINGS;
	cfg.max_pairs = (u32)cmdline_u64("netdrv.pairs", 0);
	cfg.poll = cmdline_u64("netdrv.poll", 0) != 0;
	cfg.no_event_idx = cmdline_u64("netdrv.event_idx", 1) == 0;
	cmdline_str("netdrv.mode", mode, sizeof(mode));
	cfg.reflect = strncmp(mode, "reflect", 8) == 0;
	char irq[8] = "";
	cmdline_str("netdrv.irq", irq, sizeof(irq));
	cfg.level = strncmp(irq, "level", 6) == 0;
	u64 timeout_ms = cmdline_u64("netdrv.timeout", 10000);
	u64 deadline = t_start + ms_to_tsc(timeout_ms);

	char arg[32];
	if (cmdline_str("netdrv.ip", arg, sizeof(arg)))
		parse_ip(arg, strlen(arg), &cfg.ip);
	if (cmdline_str("netdrv.peer", arg, sizeof(arg)))
		parse_ip(arg, strlen(arg), &cfg.peer);
	memcpy(cfg.peer_mac, bcast, 6);
	if (cfg.reflect && cmdline_str("netdrv.peermac", arg, sizeof(arg)))
		parse_mac(arg, strlen(arg), cfg.peer_mac);

	arena_init();
	find_devices();
	if (!cfg.poll)
		lapic_enable();

	for (int i = 0; i < ndevs; i++) {
		struct dev *d = &devs[i];
		d->ip = cfg.ip + i;
		const char *err = dev_init(d);
		if (err) {
			kprintf("netdrv dev%d: %lx irq %u: %s\n", i, (unsigned long)d->base, d->gsi, err);
			continue;
		}
		d->ok = 1;
		kprintf("netdrv dev%d: %lx irq %u mac %02x:%02x:%02x:%02x:%02x:%02x features %lx pairs %d/%d qsize %u\n", i,
			(unsigned long)d->base, d->gsi, d->mac[0], d->mac[1], d->mac[2], d->mac[3], d->mac[4], d->mac[5],
			(unsigned long)d->features, d->pairs, d->max_pairs, d->rx[0].size);
		for (int k = 0; k < d->pairs; k++) {
			struct pair_state *p = &pairs[npairs];
			p->dev = d;
			p->q = k;
			p->id = (u16)(ICMP_ID_BASE + npairs);
			npairs++;
		}
	}

	int ok = npairs > 0 && cfg.pings > 0 && (cfg.reflect || (cfg.ip && cfg.peer));
	if (ok && !cfg.reflect) {
		/* ARP for the peer on every queue pair. */
		for (int i = 0; i < npairs; i++) {
			struct pair_state *p = &pairs[i];
			u16 head;
			u8 *f = tx_get(&p->dev->tx[p->q], &head);
			if (f)
				tx_send(p->dev, &p->dev->tx[p->q], head, build_arp(f, p->dev, 1, NULL, cfg.peer));
		}
		u64 arp_deadline = rdtsc() + ms_to_tsc(3000);
		if (!run_until(have_peer, arp_deadline < deadline ? arp_deadline : deadline)) {
			kprintf("netdrv-error: no ARP reply from the peer\n");
			ok = 0;
		}
	}
	u64 t_sent = rdtsc();
	if (ok) {
		for (u32 seq = 1; seq <= cfg.pings; seq++)
			send_round(seq);
		run_until(all_replies, deadline);
	}
	u64 t_end = rdtsc();

	if (ok && !cfg.poll) {
		/* A short exchange can be over (every reply found by polling)
		 * before the first interrupt lands: an irqfd on an IOAPIC pin is
		 * injected by a host kernel worker, late on a loaded host. Give
		 * it up to a second before calling it missing. */
		u64 until = rdtsc() + ms_to_tsc(1000);
		while (irq_total() == 0 && rdtsc() < until)
			cpu_relax();
		if (irq_total() == 0) {
			kprintf("netdrv-error: no interrupt was received\n");
			ok = 0;
		}
	}
	u32 sent = 0, replies = 0;
	for (int i = 0; i < npairs; i++) {
		sent += pairs[i].sent;
		replies += pairs[i].replies;
		if (pairs[i].replies < cfg.pings)
			ok = 0;
	}
	char perq[8 * MAX_DEVS * MAX_PAIRS + 1] = "";
	size_t pl = 0;
	for (int i = 0; i < npairs && pl < sizeof(perq) - 8; i++)
		pl += snprintf(perq + pl, sizeof(perq) - pl, "%s%u", i ? "/" : "", pairs[i].rx_frames);
	kprintf("netdrv-stats: mode=%s irqs=%u rx_frames=%lu rx_per_pair=%s rx_bad=%lu setup_ms=%lu exchange_ms=%lu tsc_mhz=%lu\n",
		cfg.reflect ? "reflect" : (cfg.poll ? "ping/poll" : "ping/irq"), irq_total(), (unsigned long)cfg.rx_frames,
		perq, (unsigned long)cfg.rx_bad, (unsigned long)((t_sent - t_start) / (cfg.tsc_hz / 1000)),
		(unsigned long)((t_end - t_sent) / (cfg.tsc_hz / 1000)), (unsigned long)(cfg.tsc_hz / 1000000));
	kprintf("netdrv: pairs=%d sent=%u replies=%u\n", npairs, sent, replies);
	sys_exit(ok ? 0 : 1);
}
