package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spawnerhq/spawner/client"
	"github.com/spawnerhq/spawner/messages"
)

const sessionsUsage = `Usage:
  spawner sessions ls [--pool P]       list live sessions (of pool P; * for every pool)
  spawner sessions get ID              show one session
  spawner sessions new [flags]         start a session and print its URL
      --app NAME         the catalog app to run (spawner apps ls)
      --key K            get-or-create: reuse the live session with key K
      --label k=v        a label (repeatable)
      --env NAME=VALUE   an environment variable for the app (repeatable)
      --idle-timeout D   end it after D without activity (e.g. 10m)
      --max-lifetime D   end it D after it started
      --pool P           spawn in pool P
      --place k=v        spawn in the nearest pool with this label (repeatable)
  spawner sessions rm ID...            end sessions
  spawner events [flags]               print lifecycle events as they happen
      --session ID       one session's events; ends when the session does
      --replay N         stored events to print first (default 100)
      --no-follow        stop once the stored events are printed

Every verb takes:
  --api URL      the gateway (SPAWNER_API_URL; when unset, the address in
                 SPAWNER_HTTP_ADDR, so ":9090" means http://127.0.0.1:9090;
                 with neither, http://127.0.0.1:8080)
  --token T      a Bearer token (SPAWNER_API_TOKEN)
  -o FORMAT      table (default) or json
`

// cliOptions are the flags every API verb takes.
type cliOptions struct {
	api, token, output string
	// apiFrom says where api came from, for errors that name it.
	apiFrom string
	fs      *flag.FlagSet
}

func (o *cliOptions) register(fs *flag.FlagSet) {
	api, from := defaultAPI(os.Getenv)
	o.apiFrom, o.fs = from, fs
	fs.StringVar(&o.api, "api", api, "the gateway's URL")
	fs.StringVar(&o.token, "token", os.Getenv("SPAWNER_API_TOKEN"), "a Bearer token for the API")
	fs.StringVar(&o.output, "o", "table", "output format: table or json")
}

func (o *cliOptions) client() (*client.Client, error) {
	if o.output != "table" && o.output != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", o.output)
	}
	var opts []client.Option
	if o.token != "" {
		opts = append(opts, client.WithToken(o.token))
	}
	return client.New(o.api, opts...)
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, as "rm ID --api URL" reads naturally.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, sessionsUsage) }
	return fs
}

// runSessions is "spawner sessions ls|get|new|rm".
func runSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o cliOptions
	return o.explain(sessions(ctx, &o, args, stdout, stderr))
}

func sessions(ctx context.Context, o *cliOptions, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, sessionsUsage)
		return nil
	}
	verb := args[0]
	fs := newFlagSet("sessions "+verb, stderr)
	o.register(fs)
	var req messages.SpawnRequest
	var pool string
	if verb == "ls" || verb == "list" {
		fs.StringVar(&pool, "pool", "", "list this pool's sessions; * lists every pool's")
	}
	if verb == "new" {
		fs.StringVar(&req.Pool, "pool", "", "the pool to spawn in")
		fs.Func("place", "a label k=v the pool must carry (repeatable)", pairFlag(&req.Placement))
		fs.StringVar(&req.App, "app", "", "the catalog app to run")
		fs.StringVar(&req.Key, "key", "", "get-or-create key")
		fs.Func("label", "a label k=v (repeatable)", pairFlag(&req.Labels))
		fs.Func("env", "an environment variable NAME=VALUE (repeatable)", pairFlag(&req.Env))
		fs.Func("idle-timeout", "idle timeout, e.g. 10m", secondsFlag(&req.IdleTimeoutSeconds))
		fs.Func("max-lifetime", "maximum lifetime, e.g. 2h", secondsFlag(&req.MaxLifetimeSeconds))
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	switch verb {
	case "ls", "list":
		if len(pos) != 0 {
			return errors.New("sessions ls takes no arguments")
		}
		list, err := c.ListPool(ctx, pool)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return writeJSONOut(stdout, list)
		}
		return writeSessionTable(stdout, list, time.Now())
	case "get":
		if len(pos) != 1 {
			return errors.New("sessions get takes one session id")
		}
		s, err := c.Get(ctx, pos[0])
		if err != nil {
			return err
		}
		if o.output == "json" {
			return writeJSONOut(stdout, s)
		}
		return writeSessionDetail(stdout, s, time.Now())
	case "new":
		if len(pos) != 0 {
			return errors.New("sessions new takes flags only")
		}
		rep, err := c.Init(ctx, req)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return writeJSONOut(stdout, rep)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATUS\tCREATED\tURL")
		fmt.Fprintf(tw, "%s\t%s\t%t\t%s\n", rep.SessionID, rep.Status, rep.Created, rep.URL)
		return tw.Flush()
	case "rm", "delete":
		if len(pos) == 0 {
			return errors.New("sessions rm takes one or more session ids")
		}
		var failed []string
		for _, id := range pos {
			if err := c.Delete(ctx, id); err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					return err // explain says where the gateway was looked for
				}
				fmt.Fprintf(stderr, "%s: %v\n", id, err)
				failed = append(failed, id)
				continue
			}
			if o.output == "json" {
				_ = writeJSONOut(stdout, map[string]string{"session_id": id, "status": string(messages.StatusTerminated)})
			} else {
				fmt.Fprintf(stdout, "ended %s\n", id)
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("could not end %s", strings.Join(failed, ", "))
		}
		return nil
	default:
		return fmt.Errorf("unknown sessions verb %q\n\n%s", verb, sessionsUsage)
	}
}

// runEvents is "spawner events": it prints events until the stream ends,
// the user interrupts, or, with --no-follow, the replay is done.
func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o cliOptions
	return o.explain(events(ctx, &o, args, stdout, stderr))
}

func events(ctx context.Context, o *cliOptions, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("events", stderr)
	o.register(fs)
	var opts client.EventsOptions
	fs.StringVar(&opts.SessionID, "session", "", "one session's events")
	fs.IntVar(&opts.Replay, "replay", 0, "stored events to print first")
	fs.BoolVar(&opts.UntilLive, "no-follow", false, "stop once the stored events are printed")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return errors.New("events takes flags only")
	}
	if opts.Replay < 0 {
		return errors.New("--replay: want 0 or more")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Events(ctx, opts)
	if err != nil {
		return err
	}
	defer stream.Close()
	for {
		ev, err := stream.Next()
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if o.output == "json" {
			if err := writeJSONLine(stdout, ev); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintln(stdout, formatEvent(ev)); err != nil {
			return err
		}
	}
}

func formatEvent(ev messages.Event) string {
	detail := ev.URL
	switch ev.Type {
	case messages.EventReady:
		detail = fmt.Sprintf("%s  in %.2fs", ev.URL, ev.SpawnSeconds)
	case messages.EventFailed:
		detail = fmt.Sprintf("%s: %s", ev.Reason, ev.Error)
	case messages.EventStopping:
		detail = string(ev.Reason)
	case messages.EventTerminated:
		detail = fmt.Sprintf("%s  after %s", ev.Reason, humanDuration(time.Duration(ev.LifetimeSeconds*float64(time.Second))))
	}
	return fmt.Sprintf("%s  %-10s  %s  %s", ev.Time.Local().Format("15:04:05"), ev.Type, ev.SessionID, detail)
}

func writeSessionTable(w io.Writer, list []client.Session, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPP\tPOOL\tSTATUS\tAGE\tIDLE\tCONNS\tKEY\tURL")
	for _, s := range list {
		idle, conns := "-", "-"
		if s.SecondsInactive != nil {
			idle = humanDuration(time.Duration(*s.SecondsInactive) * time.Second)
		}
		if s.ActiveConnections != nil {
			conns = strconv.Itoa(*s.ActiveConnections)
		}
		key := s.Key
		if key == "" {
			key = "-"
		}
		app := s.App
		if app == "" {
			app = "-"
		}
		pool := s.Pool
		if pool == "" {
			pool = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, app, pool, s.Status,
			humanDuration(now.Sub(s.CreatedAt)), idle, conns, key, s.URL)
	}
	return tw.Flush()
}

func writeSessionDetail(w io.Writer, s client.Session, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("ID", s.ID)
	row("App", s.App)
	row("Status", string(s.Status))
	row("URL", s.URL)
	row("Key", s.Key)
	row("Backend", s.Backend)
	row("Pool", s.Pool)
	row("Owner", s.Owner)
	row("Upstream", s.Upstream)
	row("Created", s.CreatedAt.Local().Format(time.RFC3339)+" ("+humanDuration(now.Sub(s.CreatedAt))+" ago)")
	if s.IdleTimeoutSeconds > 0 {
		row("Idle timeout", humanDuration(time.Duration(s.IdleTimeoutSeconds)*time.Second))
	}
	if s.ActiveConnections != nil {
		row("Connections", strconv.Itoa(*s.ActiveConnections))
	}
	if s.SecondsInactive != nil {
		row("Idle", humanDuration(time.Duration(*s.SecondsInactive)*time.Second))
	}
	if s.ProbeError != nil {
		row("Probe error", *s.ProbeError)
	}
	for k, v := range s.Labels {
		row("Label "+k, v)
	}
	return tw.Flush()
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeJSONLine(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

// humanDuration is a short age such as 45s, 12m5s, 3h20m or 2d4h.
func humanDuration(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

func pairFlag(m *map[string]string) func(string) error {
	return func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want NAME=VALUE, got %q", s)
		}
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[k] = v
		return nil
	}
}

func secondsFlag(dst *int64) func(string) error {
	return func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			return fmt.Errorf("want a duration of at least 1s such as 90s or 10m, got %q", s)
		}
		*dst = int64(d / time.Second)
		return nil
	}
}
