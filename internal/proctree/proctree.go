// Package proctree lists the processes below a process, from /proc. Tests
// use it to see every jailed process the service started, and benchmarks
// to add up their memory.
package proctree

import (
	"os"
	"strconv"
	"strings"
)

// Descendants returns the pids of every process below pid, breadth first.
// Processes that exit while it reads are skipped.
func Descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		dir := "/proc/" + strconv.Itoa(p) + "/task/"
		tasks, _ := os.ReadDir(dir)
		for _, task := range tasks {
			data, err := os.ReadFile(dir + task.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(data)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
					queue = append(queue, c)
				}
			}
		}
	}
	return out
}
