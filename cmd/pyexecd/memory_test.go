package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestMemoryMeansOneThing: memory_mb is what the script may use on top of
// what its sandbox holds when it starts, enforced the same way on every
// request. The same request sent 20 times at each value gets the same
// answer every time (before, a hello at 256 MiB or less failed about half
// the time: the limit counted the ~256 MiB the interpreter maps already).
// Below the smallest accepted value is invalid_request naming it.
func TestMemoryMeansOneThing(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2")
	r := s.execute(t, helloScript, map[string]any{"memory_mb": 15})
	if r.Status != 400 || r.Error == nil || r.Error.Type != "invalid_request" || !strings.Contains(r.Error.Message, "16") {
		t.Fatalf("memory_mb 15: status %d, error %+v; want 400 invalid_request naming the minimum, 16", r.Status, r.Error)
	}
	allocate := func(mb int) string {
		return fmt.Sprintf("def main():\n    return len(bytearray(%d << 20))\n", mb)
	}
	cases := []struct {
		name     string
		script   string
		memoryMB int
		want     string // "" for success, else the error type
	}{
		{"hello at the minimum", helloScript, 16, ""},
		{"hello at 64", helloScript, 64, ""},
		{"hello at 256", helloScript, 256, ""},
		{"hello at the maximum", helloScript, 1024, ""},
		{"48 MiB at 64", allocate(48), 64, ""},
		{"80 MiB at 64", allocate(80), 64, "memory_limit"},
		{"32 MiB at the minimum", allocate(32), 16, "memory_limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			answers := map[string]int{}
			for range 20 {
				r := s.execute(t, tc.script, map[string]any{"memory_mb": tc.memoryMB})
				got := ""
				if r.Error != nil {
					got = r.Error.Type
				} else if r.Status != 200 {
					got = fmt.Sprintf("status %d", r.Status)
				}
				answers[got]++
			}
			if len(answers) != 1 || answers[tc.want] != 20 {
				t.Errorf("20 identical requests answered %v (\"\" is success), want %q every time", answers, tc.want)
			}
		})
	}
}
