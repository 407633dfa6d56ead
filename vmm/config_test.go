package vmm

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMemSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{"128M", 128 << 20, ""},
		{"128m", 128 << 20, ""},
		{"1G", 1 << 30, ""},
		{"2GiB", 2 << 30, ""},
		{"512K", 512 << 10, ""},
		{"512MB", 512 << 20, ""},
		{"4096", 4096, ""},
		{" 64M ", 64 << 20, ""},
		{"12Q", 0, "want a number"},
		{"0", 0, "greater than zero"},
		{"0M", 0, "greater than zero"},
		{"", 0, "empty"},
		{"-1M", 0, "want a number"},
		{"1.5G", 0, "want a number"},
		{"M", 0, "want a number"},
		{"99999999999T", 0, "too large"},
	} {
		got, err := ParseMemSize(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseMemSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMemSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	for _, v := range []uint64{4096, 1 << 20, 128 << 20, 3 << 30, 5000} {
		got, err := ParseMemSize(FormatSize(v))
		if err != nil || got != v {
			t.Errorf("ParseMemSize(FormatSize(%d)=%q) = %d, %v", v, FormatSize(v), got, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Kernel: []byte{1}, MemSize: 128 << 20, CPUs: 1}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no kernel", func(c *Config) { c.Kernel = nil }, "no kernel"},
		{"zero cpus", func(c *Config) { c.CPUs = 0 }, "--cpus 0"},
		{"too many cpus", func(c *Config) { c.CPUs = 1000 }, "--cpus 1000"},
		{"tiny memory", func(c *Config) { c.MemSize = 1 << 20 }, "below the minimum"},
		{"huge memory", func(c *Config) { c.MemSize = 1 << 50 }, "above the maximum"},
		{"unaligned memory", func(c *Config) { c.MemSize = 128<<20 + 1 }, "multiple of 4 KiB"},
		{"NUL in cmdline", func(c *Config) { c.Cmdline = "a\x00b" }, "NUL"},
	} {
		c := good
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidConfig containing %q", tc.name, err, tc.want)
		}
	}
}
