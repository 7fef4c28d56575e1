package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"strings"
)

// splitMode separates the mode from its arguments. Arguments that start
// with a flag belong to the default mode, so that "spawner
// --application-image IMG" runs everything as the seed's binary did.
func splitMode(args []string) (string, []string) {
	if len(args) == 0 {
		return "all", nil
	}
	if strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
		return "all", args
	}
	return args[0], args[1:]
}

// applyComponentFlags reads the flags the component modes accept, each an
// alias of a setting, into the environment that LoadConfig then reads. A
// flag wins over the variable, as on the seed's command line.
func applyComponentFlags(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("spawner", flag.ContinueOnError)
	fs.SetOutput(stderr)
	image := fs.String("application-image", "", "the session app's image (alias of SPAWNER_APPLICATION_IMAGE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("unexpected argument " + fs.Arg(0) + ": the component modes take only --application-image")
	}
	if *image != "" {
		return os.Setenv("SPAWNER_APPLICATION_IMAGE", *image)
	}
	return nil
}
