// Package app wires Spawner's components into processes. The binary's
// modes and the end-to-end tests run the same code, as benbjohnson/wtf's
// Main does, so what the tests prove is what ships.
package app

//go:generate go run ./gensettings ../../README.md

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/kelseyhightower/envconfig"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/prober"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/docker"
	"github.com/spawnerhq/spawner/provisioner/kube"
	"github.com/spawnerhq/spawner/provisioner/process"
	"github.com/spawnerhq/spawner/reaper"
)

// EnvPrefix starts every environment variable Spawner reads.
const EnvPrefix = "SPAWNER"

// Config is every setting of every component, each part read from the
// environment by its own struct's tags.
type Config struct {
	Common      Common
	Bus         bus.Config
	Gateway     gateway.Config
	Provisioner provisioner.Config
	Process     process.Config
	Docker      docker.Config
	Kube        kube.Config
	Prober      prober.Config
	Reaper      reaper.Config
}

// Common holds the settings that belong to no single component.
type Common struct {
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"text" desc:"text or json"`
	// DataDir holds the embedded NATS server's JetStream files.
	DataDir string `envconfig:"DATA_DIR" default:".spawner" desc:"where the embedded NATS server keeps its JetStream files"`
	// MetricsAddr serves /metrics on its own listener, for processes that
	// run no gateway; the gateway always serves /metrics too.
	MetricsAddr string `envconfig:"METRICS_ADDR" desc:"a separate /metrics listener, for components without the gateway"`
	// SessionAuth is "none" or "token": with "token", /init returns a
	// session token and the proxy lets only its holders in.
	SessionAuth string `envconfig:"SESSION_AUTH" default:"none" desc:"none, or token: each session's URL needs its own token"`
	// SessionSecret (hex, 32 bytes or more) signs session tokens; every
	// gateway and provisioner must share it. Empty keeps one in DataDir.
	SessionSecret string `envconfig:"SESSION_SECRET" desc:"hex secret that signs session tokens (default: kept in the data dir); share it between replicas"`
	// Apps names the app catalog file (YAML or JSON): the named apps a
	// request may pick. Empty means the settings define one app, "default".
	Apps string `envconfig:"APPS" desc:"the app catalog file, YAML or JSON; see App catalog (default: one app, default, from the other settings)"`
}

// LoadConfig reads the environment into a Config.
func LoadConfig() (Config, error) {
	var c Config
	for _, part := range c.parts() {
		if err := envconfig.Process(EnvPrefix, part); err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
	}
	return c, nil
}

// parts lists the structs LoadConfig fills, each read with the same prefix.
func (c *Config) parts() []any {
	return []any{&c.Common, &c.Bus, &c.Gateway, &c.Provisioner, &c.Process, &c.Docker, &c.Kube, &c.Prober, &c.Reaper}
}

// NewLogger builds the process's logger from Common.
func NewLogger(c Common) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", c.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.LogFormat) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", c.LogFormat)
	}
}
