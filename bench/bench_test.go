package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

const wrkOut = `Running 10s test @ http://127.0.0.1:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.05ms  500.00us  20.00ms   90.00%
    Req/Sec    30.12k     1.00k   32.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    1.80ms
     99%    4.50ms
  301234 requests in 10.00s, 40.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  30123.40
Transfer/sec:      4.00MB
`

func TestParseWrk(t *testing.T) {
	r, err := ParseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{RPS: 30123.40, P50: 812 * time.Microsecond, P99: 4500 * time.Microsecond, BytesPerSec: 4 << 20, Errors: 8}
	if r != want {
		t.Fatalf("ParseWrk = %+v, want %+v", r, want)
	}
	if _, err := ParseWrk("unable to connect to 127.0.0.1:1"); err == nil {
		t.Fatal("wrk's failure was read as a result")
	}
}

func TestParseWrkReadsTransferInBinaryUnits(t *testing.T) {
	for out, want := range map[string]float64{"1.50GB": 1.5 * (1 << 30), "512.00KB": 512 << 10, "900.00B": 900} {
		r, err := ParseWrk(strings.Replace(wrkOut, "4.00MB\n", out+"\n", 1))
		if err != nil {
			t.Fatal(err)
		}
		if r.BytesPerSec != want {
			t.Errorf("Transfer/sec %s read as %.0f bytes/s, want %.0f", out, r.BytesPerSec, want)
		}
	}
}

func FuzzParseWrk(f *testing.F) {
	f.Add(wrkOut)
	f.Add("Requests/sec: 1\n     99%   1s\n")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseWrk(s)
		if err == nil && (r.P99 <= 0 && !strings.Contains(s, "99%")) {
			t.Fatalf("a result without a 99th percentile: %+v", r)
		}
	})
}

func TestParseGoBench(t *testing.T) {
	out := "goos: linux\nBenchmarkSessionLookup/serial-2 \t 5350944\t       680.1 ns/op\t       0 B/op\t       0 allocs/op\n" +
		"BenchmarkKubeSpawn-2 \t 20 \t 122050000 ns/op \t 118.5 p50-ms \t 300.1 p99-ms\nPASS\n"
	got := ParseGoBench(out)
	if len(got) != 2 || got[0].Name != "BenchmarkSessionLookup/serial" || got[0].Metrics["ns/op"] != 680.1 || got[0].Metrics["allocs/op"] != 0 {
		t.Fatalf("ParseGoBench = %+v", got)
	}
	row := goBenchRow("kube", got[1:])
	if row.Spawner != "118.50 ms (p99-ms 300.10)" {
		t.Fatalf("row shows %q", row.Spawner)
	}
}

func TestLookupRowsReadTheLiveBenchmark(t *testing.T) {
	out := "BenchmarkSessionLookup/serial-2   \t 5350944\t       61.5 ns/op\t       0 B/op\t       0 allocs/op\n" +
		"BenchmarkSessionLookup/parallel-2 \t 9000000\t       33.0 ns/op\t       0 B/op\t       0 allocs/op\nPASS\n"
	rows := lookupRows(ParseGoBench(out))
	if len(rows) != 3 || rows[0].Spawner != "62 ns" || rows[0].Met != "yes" || rows[2].Spawner != "33 ns" {
		t.Fatalf("rows = %+v", rows)
	}
	allocating := strings.Replace(out, "0 B/op\t       0 allocs/op", "48 B/op\t       2 allocs/op", 1)
	if rows := lookupRows(ParseGoBench(allocating)); rows[0].Met != "no" || rows[1].Spawner != "2" {
		t.Fatalf("an allocating lookup was reported as %+v", rows)
	}
	old := "BenchmarkSessionLookup/fast-2 \t 1 \t 680 ns/op \t 0 allocs/op\n"
	if rows := lookupRows(ParseGoBench(old)); rows != nil {
		t.Fatalf("the old sub-benchmark names were read: %+v", rows)
	}
}

func TestPercentile(t *testing.T) {
	var d Durations
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := d.Percentile(50); p != 100*time.Millisecond {
		t.Errorf("p50 = %s", p)
	}
	if p := d.Percentile(99); p != 198*time.Millisecond {
		t.Errorf("p99 = %s", p)
	}
	if p := (Durations{}).Percentile(99); p != 0 {
		t.Errorf("empty p99 = %s", p)
	}
}

func TestWriteMarkdownCountsGoals(t *testing.T) {
	var b bytes.Buffer
	err := WriteMarkdown(&b, Machine{Cores: 2, CPU: "cpu", Go: "go", Date: time.Unix(0, 0)}, time.Minute, []Section{{
		Title: "S", Rows: []Row{{Metric: "a|b", Spawner: "1", Met: "yes"}, {Metric: "c", Met: "no"}, {Metric: "d", Met: "—"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"Goals met: 1 of 2.", `| a\|b | 1 | — | — | — | yes |`, "2 cores, cpu"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestStartSampleRowsJudgeTheOverhead(t *testing.T) {
	var s startSample
	s.n = 100
	for i := range 100 {
		s.direct = append(s.direct, 200*time.Millisecond+time.Duration(i)*time.Microsecond)
		// 3 ms slower at p50, 30 ms slower at p99.
		extra := 3 * time.Millisecond
		if i >= 98 {
			extra = 30 * time.Millisecond
		}
		s.viaSpawner = append(s.viaSpawner, s.direct[i]+extra)
	}
	rows := s.rows("app ready after 200ms", true)
	if len(rows) != 2 || rows[0].Met != "yes" || rows[1].Met != "no" || !strings.Contains(rows[0].Spawner, "(+3.00 ms)") {
		t.Fatalf("rows = %+v", rows)
	}
	if rows := s.rows("isolation none", false); rows[0].Met != "—" || rows[0].Goal != "" {
		t.Fatalf("a row without a goal was judged: %+v", rows[0])
	}
}

func TestProxyRowsJudgeTheGoals(t *testing.T) {
	ms := time.Millisecond
	best := map[string]map[string]WrkResult{
		// 1.05× nginx misses the 1.1× goal; 1.2× meets it.
		"c32":  {"spawner": {RPS: 10500, P99: 2 * ms}, "nginx": {RPS: 10000, P99: 2 * ms}, "direct": {RPS: 20000, P99: 1500 * time.Microsecond}},
		"c256": {"spawner": {RPS: 12000}, "nginx": {RPS: 10000}, "direct": {RPS: 20000}},
		"big":  {"spawner": {BytesPerSec: 99 << 20}, "nginx": {BytesPerSec: 100 << 20}, "direct": {BytesPerSec: 300 << 20}},
	}
	cpu := map[string]time.Duration{"spawner": 20 * time.Microsecond, "nginx": 25 * time.Microsecond, "direct": 10 * time.Microsecond}
	single := map[string]WrkResult{"spawner": {P99: 3 * ms}, "nginx": {P99: ms}, "direct": {P99: ms}}
	rows := httpRows(best, cpu, single)
	met := map[string]string{}
	for _, r := range rows {
		met[r.Metric] = r.Met
	}
	for metric, want := range map[string]string{
		"HTTP req/s, small JSON, wrk -t1 -c32 (vs nginx)":                     "no",
		"HTTP req/s, small JSON, wrk -t1 -c256 (app direct: 20000)":           "yes",
		"HTTP MiB/s, 1 MiB response, wrk -t1 -c32 (app direct: 300)":          "no",
		"CPU per request, proxy process(es) only, -c32 (app direct: 10.0 µs)": "yes",
		"p99 latency, 32 connections (app direct: 1.50 ms)":                   "yes",
		"p99 latency, 1 connection (app direct: 1.00 ms)":                     "no",
		"HTTP req/s, small JSON, wrk -t1 -c32 (vs the app direct)":            "—",
	} {
		if got, ok := met[metric]; !ok || got != want {
			t.Errorf("%q met %q, want %q (rows %+v)", metric, got, want, rows)
		}
	}
	if rows[0].Goal != "≥ 1.1× nginx" {
		t.Errorf("the -c32 goal reads %q", rows[0].Goal)
	}
	delete(cpu, "nginx")
	if r := httpRows(best, cpu, single)[4]; r.Met != "—" {
		t.Errorf("CPU per request without nginx's figure was judged %q", r.Met)
	}
}
