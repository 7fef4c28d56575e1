package settings

import (
	"reflect"
	"testing"
	"time"
)

type Inner struct {
	Prefix string `envconfig:"PREFIX" default:"spawner"`
}

type sample struct {
	Inner
	Wait    time.Duration `envconfig:"WAIT" default:"1m30s"`
	Count   int           `envconfig:"COUNT" default:"-3"`
	Rate    float64       `envconfig:"RATE" default:"0.5"`
	On      bool          `envconfig:"ON" default:"true"`
	Names   []string      `envconfig:"NAMES" default:"a,b"`
	Plain   string        `envconfig:"PLAIN"`
	Skipped string        `ignored:"true" default:"no"`
}

func TestDefaultsReadTheTags(t *testing.T) {
	got := Defaults[sample]()
	want := sample{Inner: Inner{Prefix: "spawner"}, Wait: 90 * time.Second, Count: -3, Rate: 0.5, On: true, Names: []string{"a", "b"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Defaults = %+v, want %+v", got, want)
	}
}

func TestOverlayKeepsWhatIsSet(t *testing.T) {
	got := Overlay(sample{Count: 7, Plain: "x", Inner: Inner{Prefix: "p"}})
	want := sample{Inner: Inner{Prefix: "p"}, Wait: 90 * time.Second, Count: 7, Rate: 0.5, On: true, Names: []string{"a", "b"}, Plain: "x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Overlay = %+v, want %+v", got, want)
	}
}

func TestABadTagPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a default its field cannot hold was accepted")
		}
	}()
	Defaults[struct {
		N int `default:"many"`
	}]()
}
