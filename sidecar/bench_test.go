package sidecar

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

const benchSockets = 10_000

func BenchmarkCount10k(b *testing.B) {
	table, want := syntheticTable(benchSockets, 8080)
	r := bytes.NewReader(table)
	b.SetBytes(int64(len(table)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(table)
		est, listening, err := Count(r, 8080)
		if err != nil || est != want || !listening {
			b.Fatalf("Count = %d, %v, %v; want %d, true, nil", est, listening, err, want)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchSockets, "ns/socket")
}

// BenchmarkStatus10k includes opening and reading the files, as a poll does;
// the tcp6 table is absent, as on an IPv4-only kernel.
func BenchmarkStatus10k(b *testing.B) {
	table, want := syntheticTable(benchSockets, 8080)
	dir := b.TempDir()
	tcp := filepath.Join(dir, "tcp")
	if err := os.WriteFile(tcp, table, 0o644); err != nil {
		b.Fatal(err)
	}
	w := mustWatcher(b, 8080, nil, Tables{TCP: tcp, TCP6: filepath.Join(dir, "tcp6")})
	b.SetBytes(int64(len(table)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := w.Status()
		if err != nil || st.ActiveConnections != want {
			b.Fatalf("Status = %+v, %v; want %d connections", st, err, want)
		}
	}
}

// TestSyntheticTableCounts keeps the benchmark honest: the generator's idea
// of the answer must match a count by hand over the parsed sockets.
func TestSyntheticTableCounts(t *testing.T) {
	table, want := syntheticTable(1000, 8080)
	lines := bytes.Count(table, []byte("\n"))
	if lines != 1001 {
		t.Fatalf("table has %d lines, want 1001", lines)
	}
	est, listening, err := Count(bytes.NewReader(table), 8080)
	if err != nil || est != want || !listening || want != 599 {
		t.Fatalf("Count = %d, %v, %v; generator says %d", est, listening, err, want)
	}
}

func TestCountDoesNotAllocatePerLine(t *testing.T) {
	small, _ := syntheticTable(100, 8080)
	large, _ := syntheticTable(benchSockets, 8080)
	r := bytes.NewReader(nil)
	allocs := func(table []byte) float64 {
		return testing.AllocsPerRun(20, func() {
			r.Reset(table)
			if _, _, err := Count(r, 8080); err != nil {
				t.Fatal(err)
			}
		})
	}
	a100, a10k := allocs(small), allocs(large)
	// Any per-line allocation would add about 9,900 allocations.
	if a10k > a100+1 {
		t.Errorf("Count allocates per line: %v allocs for 100 sockets, %v for 10,000", a100, a10k)
	}
}
