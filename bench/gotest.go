package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// GoBench is one result line of go test -bench: ns/op and any custom
// metrics the benchmark reported, by unit.
type GoBench struct {
	Name    string
	Metrics map[string]float64
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// ParseGoBench reads go test -bench output.
func ParseGoBench(out string) []GoBench {
	var res []GoBench
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		b := GoBench{Name: m[1], Metrics: map[string]float64{}}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.Metrics[f[i+1]] = v
			}
		}
		res = append(res, b)
	}
	return res
}

// RunGoBench runs the benchmarks matching pattern in pkg.
func RunGoBench(ctx context.Context, pkg, pattern, benchtime string, env ...string) ([]GoBench, string, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", pattern, "-benchmem", "-benchtime", benchtime, "-count", "1", pkg)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(out), fmt.Errorf("go test -bench %s %s: %w: %s", pattern, pkg, err, lastLines(string(out), 15))
	}
	return ParseGoBench(string(out)), string(out), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// findBenchmark returns the package directory that declares func name, or "".
func findBenchmark(name string) string {
	found := ""
	_ = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return nil
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".cache" || d.Name() == "bin" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(data), "func "+name+"(") {
			found = "./" + filepath.Dir(path)
		}
		return nil
	})
	return found
}

// Lookup is the per-request session lookup with 10,000 live sessions, as
// the live proxy does it: BenchmarkSessionLookup drives router.address, the
// id check and the route table, which proxySession calls.
func Lookup(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "Session lookup",
		PeerName: "none; the live path (router.address, the id check, the route table) has no outside counterpart"}
	res, _, err := RunGoBench(ctx, "./api-gateway/", "^BenchmarkSessionLookup$", pick(env, "1s", "200ms"))
	if err != nil {
		return sec, err
	}
	sec.Rows = lookupRows(res)
	if len(sec.Rows) == 0 {
		return sec, fmt.Errorf("BenchmarkSessionLookup reported no serial result")
	}
	return sec, nil
}

// lookupRows turns BenchmarkSessionLookup's serial and parallel results
// into the report's rows; none when the serial one is missing.
func lookupRows(res []GoBench) []Row {
	by := map[string]GoBench{}
	for _, b := range res {
		by[strings.TrimPrefix(b.Name, "BenchmarkSessionLookup/")] = b
	}
	serial, ok := by["serial"]
	if !ok {
		return nil
	}
	allocs := serial.Metrics["allocs/op"]
	rows := []Row{
		{Metric: "lookup per request, 10,000 sessions in the route table", Spawner: fmt.Sprintf("%.0f ns", serial.Metrics["ns/op"]),
			Goal: "no allocations", Met: Met(allocs == 0)},
		{Metric: "allocations per lookup", Spawner: fmt.Sprintf("%.0f", allocs), Met: "—"},
	}
	if p, ok := by["parallel"]; ok {
		rows = append(rows, Row{Metric: "lookup per request, all cores in parallel", Spawner: fmt.Sprintf("%.0f ns", p.Metrics["ns/op"]), Met: "—"})
	}
	return rows
}

// KubeSpawn reports BenchmarkKubeSpawn when a control plane is configured.
func KubeSpawn(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "Spawn latency, Kubernetes backend", PeerName: "none"}
	row := Row{Metric: "/init to ready URL (BenchmarkKubeSpawn)", Spawner: "not measured (no control plane)", Met: "—"}
	kubeconfig := os.Getenv("SPAWNER_TEST_KUBECONFIG")
	_, statErr := os.Stat(kubeconfig)
	pkg := findBenchmark("BenchmarkKubeSpawn")
	switch {
	case kubeconfig == "" || statErr != nil:
	case pkg == "":
		row.Spawner = "not measured (BenchmarkKubeSpawn does not exist yet)"
	default:
		res, _, err := RunGoBench(ctx, pkg, "^BenchmarkKubeSpawn$", pick(env, "20x", "3x"))
		if err != nil {
			return sec, err
		}
		row = goBenchRow("/init to ready URL (BenchmarkKubeSpawn)", res)
	}
	sec.Rows = append(sec.Rows, row)
	return sec, nil
}

// WarmPool reports BenchmarkWarmPoolInit when it exists.
func WarmPool(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "Warm pool", PeerName: "none"}
	row := Row{Metric: "warm pool /init p50", Spawner: "not measured", Met: "—"}
	if pkg := findBenchmark("BenchmarkWarmPoolInit"); pkg != "" {
		res, _, err := RunGoBench(ctx, pkg, "^BenchmarkWarmPoolInit$", pick(env, "100x", "10x"))
		if err != nil {
			return sec, err
		}
		row = goBenchRow("warm pool /init p50 (BenchmarkWarmPoolInit)", res)
	}
	sec.Rows = append(sec.Rows, row)
	return sec, nil
}

// goBenchRow shows a benchmark's p50 when it reports one (a unit such as
// "p50-ms"), else its ns/op.
func goBenchRow(metric string, res []GoBench) Row {
	row := Row{Metric: metric, Met: "—"}
	if len(res) == 0 {
		row.Spawner = "no result"
		return row
	}
	m := res[0].Metrics
	for unit, v := range m {
		if strings.HasPrefix(unit, "p50") {
			row.Spawner = fmt.Sprintf("%.2f %s", v, strings.TrimPrefix(strings.TrimPrefix(unit, "p50"), "-"))
		}
	}
	if row.Spawner == "" {
		row.Spawner = fmt.Sprintf("%.2f ms/op (mean)", m["ns/op"]/1e6)
	}
	var extra []string
	for unit, v := range m {
		if unit != "ns/op" && !strings.HasPrefix(unit, "p50") && !strings.HasSuffix(unit, "/op") {
			extra = append(extra, fmt.Sprintf("%s %.2f", unit, v))
		}
	}
	if len(extra) > 0 {
		row.Spawner += " (" + strings.Join(extra, ", ") + ")"
	}
	return row
}
