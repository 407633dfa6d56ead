package testutil

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// CValues compiles and runs a C program that includes <stdio.h>,
// <stddef.h> and then each of includes (e.g. "linux/kvm.h"), and prints
// each C expression of exprs as an unsigned 64-bit number; it returns the
// values in the order of exprs. ABI tests compare their ioctl numbers,
// struct sizes and offsets with these. It skips unless gcc is on PATH and
// fails the test if the program does not compile, does not run or prints
// anything but one number per expression.
func CValues(t testing.TB, includes, exprs []string) []uint64 {
	t.Helper()
	cc := RequireCommand(t, "gcc")
	dir := t.TempDir()
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n")
	for _, inc := range includes {
		src.WriteString("#include <" + inc + ">\n")
	}
	src.WriteString("int main(void){\n")
	for _, e := range exprs {
		src.WriteString("printf(\"%llu\\n\", (unsigned long long)(" + e + "));\n")
	}
	src.WriteString("return 0;}\n")
	cfile := filepath.Join(dir, "abi.c")
	if err := os.WriteFile(cfile, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "abi")
	if out, err := exec.Command(cc, "-o", bin, cfile).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run abi: %v", err)
	}
	var vals []uint64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		v, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	if len(vals) != len(exprs) {
		t.Fatalf("C program printed %d values, want %d", len(vals), len(exprs))
	}
	return vals
}

// ABIValue is a number a package uses (an ioctl request, a flag, a struct
// size or offset) and the C expression that defines it.
type ABIValue struct {
	C   string // e.g. "KVM_RUN", "sizeof(struct kvm_regs)"
	Got uint64 // the package's value
}

// CheckABI compares each value of table with its C expression evaluated
// after #include <header> (CValues), reporting every mismatch. It skips
// when header is not installed under /usr/include.
func CheckABI(t testing.TB, header string, table []ABIValue) {
	t.Helper()
	RequireCommand(t, "gcc")
	if _, err := os.Stat("/usr/include/" + header); err != nil {
		t.Skipf("%s not installed: %v", header, err)
	}
	exprs := make([]string, len(table))
	for i, e := range table {
		exprs[i] = e.C
	}
	for i, want := range CValues(t, []string{header}, exprs) {
		if got := table[i].Got; got != want {
			t.Errorf("%s = %#x, kernel header says %#x", table[i].C, got, want)
		}
	}
}
