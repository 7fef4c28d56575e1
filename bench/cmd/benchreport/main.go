// Command benchreport runs Spawner's benchmarks and writes BENCHMARKS.md.
// "make bench" builds the binaries and runs it; see the Makefile.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spawnerhq/spawner/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	env := &bench.Env{Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	out := flag.String("out", "BENCHMARKS.md", "where to write the report")
	only := flag.String("only", "", "comma-separated sections to run: spawn,appstart,throughput,kube,warmpool,proxy,lookup,scale,registry,cost")
	flag.StringVar(&env.SpawnerBin, "spawner", "bin/spawner", "the spawner binary")
	flag.StringVar(&env.UpstreamBin, "upstream", "bin/benchupstream", "the benchupstream binary")
	flag.BoolVar(&env.Quick, "quick", false, "shrink every measurement, to try the harness out")
	flag.Parse()
	for _, p := range []*string{&env.SpawnerBin, &env.UpstreamBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	bench.RaiseOpenFiles()
	dir, err := os.MkdirTemp("", "spawner-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env.Dir = dir

	steps := []struct {
		name string
		run  func(context.Context, *bench.Env) ([]bench.Section, error)
	}{
		{"spawn", one(bench.SpawnLatency)},
		{"appstart", one(bench.AppStart)},
		{"throughput", one(bench.SpawnThroughput)},
		{"kube", one(bench.KubeSpawn)},
		{"warmpool", one(bench.WarmPool)},
		{"proxy", one(bench.Proxy)},
		{"lookup", one(bench.Lookup)},
		{"scale", bench.Scale},
		{"registry", one(bench.RegistryAge)},
		{"cost", bench.Cost},
	}
	want := strings.Split(*only, ",")
	start := time.Now()
	var sections []bench.Section
	for _, s := range steps {
		if *only != "" && !slices.Contains(want, s.name) {
			continue
		}
		env.Log.Info("running", "benchmark", s.name)
		secs, err := s.run(ctx, env)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// One failed measurement must not hide the others: the report
			// says what failed.
			env.Log.Error("benchmark failed", "benchmark", s.name, "err", err)
			secs = append(secs, bench.Section{Title: s.name, Notes: []string{"FAILED: " + err.Error()}})
		}
		sections = append(sections, secs...)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := bench.WriteMarkdown(f, bench.ThisMachine(), time.Since(start), sections); err != nil {
		f.Close()
		return err
	}
	env.Log.Info("report written", "path", *out, "took", time.Since(start).Round(time.Second))
	return f.Close()
}

func one(fn func(context.Context, *bench.Env) (bench.Section, error)) func(context.Context, *bench.Env) ([]bench.Section, error) {
	return func(ctx context.Context, env *bench.Env) ([]bench.Section, error) {
		s, err := fn(ctx, env)
		if err != nil {
			return nil, err
		}
		return []bench.Section{s}, nil
	}
}
