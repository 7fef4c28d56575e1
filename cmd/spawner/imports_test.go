package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSpawnerLinksTheAPIGroupsItUses fails when the binary's imports
// reach client-go's clientset, scheme or informer factory, or any API
// group beyond core/v1 (the backend) and authorization/v1 (spawner
// doctor). Those register every API group, which linked a third of the
// binary's code for objects Spawner never touches.
func TestSpawnerLinksTheAPIGroupsItUses(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	allowed := map[string]bool{"k8s.io/api/core/v1": true, "k8s.io/api/authorization/v1": true}
	var groups int
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case pkg == "k8s.io/client-go/kubernetes", strings.HasPrefix(pkg, "k8s.io/client-go/kubernetes/"),
			pkg == "k8s.io/client-go/informers", strings.HasPrefix(pkg, "k8s.io/client-go/informers/"),
			pkg == "k8s.io/client-go/discovery", strings.HasPrefix(pkg, "k8s.io/client-go/applyconfigurations/"):
			t.Errorf("spawner imports %s", pkg)
		case strings.HasPrefix(pkg, "k8s.io/api/"):
			if !allowed[pkg] {
				t.Errorf("spawner imports the API group %s", pkg)
			}
			groups++
		}
	}
	if groups == 0 {
		t.Error("spawner imports no API group: is the kubernetes backend still linked?")
	}
}

// TestComponentsImportNoOtherComponent holds the import rules of the
// architecture: messages imports nothing of ours, and the gateway, the
// provisioner, the prober, the reaper and the sidecar import the contract
// and the plumbing, never each other. Only the provisioner's backends
// import the provisioner, for the Backend interface they implement.
func TestComponentsImportNoOtherComponent(t *testing.T) {
	const mod = "github.com/spawnerhq/spawner/"
	components := []string{"api-gateway", "provisioner", "prober", "reaper", "sidecar"}
	owner := func(pkg string) string {
		for _, c := range components {
			if pkg == mod+c || strings.HasPrefix(pkg, mod+c+"/") {
				return c
			}
		}
		return ""
	}
	for _, dir := range append([]string{"messages"}, components...) {
		out, err := exec.Command("go", "list", "-deps", "../../"+dir+"/...").Output()
		if err != nil {
			t.Fatalf("go list %s: %v", dir, err)
		}
		for _, pkg := range strings.Fields(string(out)) {
			if !strings.HasPrefix(pkg, mod) || pkg == mod+dir || strings.HasPrefix(pkg, mod+dir+"/") {
				continue
			}
			if dir == "messages" || owner(pkg) != "" {
				t.Errorf("%s imports %s", dir, pkg)
			}
		}
	}
}
