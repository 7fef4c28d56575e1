package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spawnerhq/spawner/client"
)

const appsUsage = `Usage:
  spawner apps ls        list the apps a session may run (the catalog)

Takes --api, --token and -o as the sessions verbs do.
`

// runApps is "spawner apps ls".
func runApps(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, appsUsage)
		return nil
	}
	verb := args[0]
	if verb != "ls" && verb != "list" {
		return fmt.Errorf("unknown apps verb %q\n\n%s", verb, appsUsage)
	}
	fs := newFlagSet("apps "+verb, stderr)
	fs.Usage = func() { fmt.Fprint(stderr, appsUsage) }
	var o cliOptions
	o.register(fs)
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return errors.New("apps ls takes no arguments")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	list, err := c.Apps(ctx)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSONOut(stdout, list)
	}
	return writeAppTable(stdout, list)
}

func writeAppTable(w io.Writer, list client.AppList) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDEFAULT\tIDLE\tPOOL\tSTATUS SOURCE\tDESCRIPTION")
	for _, a := range list.Apps {
		def, idle, source := "", "-", a.StatusSource
		if a.Default {
			def = "yes"
		}
		if a.IdleTimeoutSeconds > 0 {
			idle = humanDuration(time.Duration(a.IdleTimeoutSeconds) * time.Second)
		}
		if source == "" {
			source = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", a.Name, def, idle, a.WarmPool, source,
			strings.ReplaceAll(a.Description, "\n", " "))
	}
	return tw.Flush()
}
