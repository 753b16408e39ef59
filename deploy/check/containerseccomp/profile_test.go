package containerseccomp

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The committed profile is exactly what Build makes: edit Additions (or
// the pinned default's version in go.mod) and regenerate, never the file.
func TestCommittedProfileIsGenerated(t *testing.T) {
	want, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", "seccomp", "pyexec.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("deploy/seccomp/pyexec.json is stale: run (cd deploy/check && go run ./cmd/container-seccomp > ../seccomp/pyexec.json)")
	}
}

// The profile refuses by default and allows only what it lists: the
// additions are allow rules on top of an errno default, not a wider default.
func TestDefaultActionRefuses(t *testing.T) {
	out, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		DefaultAction string `json:"defaultAction"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if p.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Fatalf("default action %q", p.DefaultAction)
	}
}

func TestWithoutNamesAnAddition(t *testing.T) {
	full, _ := Build()
	for _, a := range Additions() {
		less, err := Build(a.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(less) >= len(full) {
			t.Errorf("without %s the profile is not smaller", a.Name)
		}
	}
	if _, err := Build("no-such-addition"); err == nil {
		t.Error("an unknown name must be an error")
	}
}
