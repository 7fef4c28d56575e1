// Command gensettings rewrites the settings table in the README named by
// its argument from the Config structs' desc tags ("go generate ./internal/app").
package main

import (
	"fmt"
	"os"

	"github.com/spawnerhq/spawner/internal/app"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gensettings README.md")
		os.Exit(2)
	}
	if err := rewrite(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gensettings:", err)
		os.Exit(1)
	}
}

func rewrite(path string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	updated, err := app.ReplaceSettingsTable(old)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, updated, 0o644)
}
