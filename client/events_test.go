package client

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func readFrames(t *testing.T, input string) ([]sseFrame, error) {
	t.Helper()
	p := newSSEReader(strings.NewReader(input))
	var out []sseFrame
	for {
		f, err := p.next()
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

func TestSSEParsesTheStandardFormat(t *testing.T) {
	input := "retry: 2000\n\n" +
		"id: 7\nevent: ready\ndata: {\"a\":1}\n\n" +
		": keepalive\n\n" +
		"id:8\r\nevent:creating\r\ndata:line one\r\ndata: line two\r\n\r\n" +
		"data\n\n" +
		": live\n\n"
	frames, err := readFrames(t, input)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want EOF", err)
	}
	want := []sseFrame{
		{},
		{id: "7", event: "ready", data: `{"a":1}`},
		{comment: "keepalive"},
		{id: "8", event: "creating", data: "line one\nline two"},
		{},
		{comment: "live"},
	}
	if len(frames) != len(want) {
		t.Fatalf("got %d frames %+v, want %d", len(frames), frames, len(want))
	}
	for i := range want {
		if frames[i] != want[i] {
			t.Errorf("frame %d = %+v, want %+v", i, frames[i], want[i])
		}
	}
}

func TestSSERejectsTruncatedAndHugeInput(t *testing.T) {
	if _, err := readFrames(t, "id: 1\ndata: {\"half"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut-off event: %v, want ErrUnexpectedEOF", err)
	}
	huge := "data: " + strings.Repeat("x", maxEventLine+10) + "\n\n"
	if _, err := readFrames(t, huge); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("a line over the limit: %v, want an error", err)
	}
	many := strings.Repeat("data: "+strings.Repeat("y", 1000)+"\n", maxEventLine/1000+10) + "\n"
	if _, err := readFrames(t, many); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("an event over the limit: %v, want an error", err)
	}
}

func FuzzSSE(f *testing.F) {
	f.Add("id: 1\nevent: ready\ndata: {}\n\n")
	f.Add(": live\n\ndata:a\r\ndata:b\r\n\r\n")
	f.Add("data\nid\x00: 3\n\n\n")
	f.Fuzz(func(t *testing.T, input string) {
		p := newSSEReader(strings.NewReader(input))
		for range len(input) + 1 {
			f, err := p.next()
			if err != nil {
				return
			}
			if strings.ContainsRune(f.id, 0) {
				t.Fatalf("id %q holds NUL", f.id)
			}
			if strings.ContainsAny(f.event, "\r\n") {
				t.Fatalf("event %q spans lines", f.event)
			}
		}
		t.Fatal("the reader returned more frames than the input has bytes")
	})
}
