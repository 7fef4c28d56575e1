package bench

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestTimeStartWaitsForTheFirstAnswer(t *testing.T) {
	python, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("no python3 for a stand-in server")
	}
	d, err := timeStart(t.Context(), func(port int) *exec.Cmd {
		return exec.Command(python, "-m", "http.server", strconv.Itoa(port), "--bind", "127.0.0.1")
	}, "/")
	if err != nil || d <= 0 {
		t.Fatalf("python's http.server: %v after %s", err, d)
	}
	_, err = timeStart(t.Context(), func(int) *exec.Cmd { return exec.Command("false") }, "/")
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("a process that exits: %v, want it reported", err)
	}
}
