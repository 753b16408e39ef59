package proctree

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

func TestDescendantsFindsChildAndGrandchild(t *testing.T) {
	// sh starts a sleep and waits for it: child and grandchild of the test.
	cmd := exec.Command("/bin/sh", "-c", "sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	for range 200 {
		got := Descendants(os.Getpid())
		if slices.Contains(got, cmd.Process.Pid) && len(got) >= 2 {
			return
		}
		exec.Command("/bin/sleep", "0.01").Run()
	}
	t.Fatalf("descendants %v lack the shell %d and its sleep", Descendants(os.Getpid()), cmd.Process.Pid)
}
