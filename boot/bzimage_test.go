package boot

import (
	"errors"
	"testing"
)

func TestParseBzImage(t *testing.T) {
	tests := []struct {
		name      string
		spec      func(*bzSpec)
		wantEntry uint64
		wantSetup int // bytes of setup before the payload
	}{
		{"default", func(*bzSpec) {}, 0x1000200, 5 * 512},
		{"setup_sects 0 means 4", func(s *bzSpec) { s.setupSects = 0 }, 0x1000200, 5 * 512},
		{"setup_sects 30", func(s *bzSpec) { s.setupSects = 30 }, 0x1000200, 31 * 512},
		{"protocol 2.12", func(s *bzSpec) { s.version = 0x020C }, 0x1000200, 5 * 512},
		{"no pref_address", func(s *bzSpec) { s.pref = 0 }, 0x100200, 5 * 512},
		{"syssize rounded down, CRC after it", func(s *bzSpec) { s.payload = pattern(0x2007, 5) }, 0x1000200, 5 * 512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := defaultBz()
			tt.spec(&s)
			k, err := ParseKernel(buildBz(s))
			if err != nil {
				t.Fatalf("ParseKernel: %v", err)
			}
			if k.Kind != KindBzImage || k.Protocol != s.version {
				t.Errorf("kind %v protocol %#x, want bzImage %#x", k.Kind, k.Protocol, s.version)
			}
			if k.Entry64 != tt.wantEntry || k.PVHEntry != 0 {
				t.Errorf("Entry64 %#x PVHEntry %#x, want %#x 0", k.Entry64, k.PVHEntry, tt.wantEntry)
			}
			if got := string(k.bz.payload); got != string(s.payload) {
				t.Errorf("payload differs from the protected-mode part (%d vs %d bytes)", len(got), len(s.payload))
			}
			if off := len(k.image) - len(k.bz.payload); off != tt.wantSetup {
				t.Errorf("payload at file offset %d, want %d", off, tt.wantSetup)
			}
		})
	}
}

func TestParseBzImageErrors(t *testing.T) {
	tests := []struct {
		name string
		spec func(*bzSpec)
		edit func([]byte) []byte
		want error
	}{
		{"wrong boot_flag", func(s *bzSpec) { s.bootFlag = 0x55AA }, nil, ErrMalformed},
		{"wrong header magic", func(s *bzSpec) { s.magic = "HdrZ" }, nil, ErrMalformed},
		{"both magics wrong", func(s *bzSpec) { s.magic, s.bootFlag = "xxxx", 0 }, nil, ErrUnknownFormat},
		{"protocol 2.11", func(s *bzSpec) { s.version = 0x020B }, nil, ErrUnsupported},
		{"protocol 2.00", func(s *bzSpec) { s.version = 0x0200 }, nil, ErrUnsupported},
		{"no XLF_KERNEL_64", func(s *bzSpec) { s.xloadflags = 0x02 }, nil, ErrUnsupported},
		{"not LOADED_HIGH (zImage)", func(s *bzSpec) { s.loadflags = 0x80 }, nil, ErrUnsupported},
		{"header too short", func(s *bzSpec) { s.hdrLen = 0x20 }, nil, ErrMalformed},
		{"header past boot_params field", func(s *bzSpec) { s.hdrLen = 0xFF }, nil, ErrMalformed},
		{"alignment not a power of two", func(s *bzSpec) { s.kernelAlign = 0x300000 }, nil, ErrMalformed},
		{"alignment zero", func(s *bzSpec) { s.kernelAlign = 0 }, nil, ErrMalformed},
		{"non-relocatable below 1 MiB", func(s *bzSpec) { s.relocatable, s.pref = 0, 0x80000 }, nil, ErrUnsupported},
		{"syssize zero", nil, func(b []byte) []byte { le.PutUint32(b[0x1F4:], 0); return b }, ErrMalformed},
		{"syssize past end", nil, func(b []byte) []byte { le.PutUint32(b[0x1F4:], 0x10000000); return b }, ErrTruncated},
		{"payload cut", nil, func(b []byte) []byte { return b[:len(b)-1] }, ErrTruncated},
		{"setup only", nil, func(b []byte) []byte { return b[:5*512] }, ErrTruncated},
		{"cut inside the header", nil, func(b []byte) []byte { return b[:0x240] }, ErrTruncated},
		{"cut before version", nil, func(b []byte) []byte { return b[:0x204] }, ErrTruncated},
		{"setup_sects past end", nil, func(b []byte) []byte { b[0x1F1] = 200; return b }, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := defaultBz()
			if tt.spec != nil {
				tt.spec(&s)
			}
			img := buildBz(s)
			if tt.edit != nil {
				img = tt.edit(img)
			}
			k, err := ParseKernel(img)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseKernel = %+v, %v; want error %v", k, err, tt.want)
			}
		})
	}
}

// TestParseBzImageTruncated: every proper prefix of a bzImage is rejected.
func TestParseBzImageTruncated(t *testing.T) {
	img := buildBz(defaultBz())
	for n := 0; n < len(img); n += 7 {
		if k, err := ParseKernel(img[:n]); err == nil {
			t.Fatalf("ParseKernel(first %d of %d bytes) = %+v, want error", n, len(img), k)
		}
	}
}
