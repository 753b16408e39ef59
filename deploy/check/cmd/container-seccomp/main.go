// Command container-seccomp writes the container's seccomp profile to
// standard output (package containerseccomp says what it is):
//
//	go run ./cmd/container-seccomp > ../seccomp/pyexec.json
//	go run ./cmd/container-seccomp -without mount   # for a necessity check
//	go run ./cmd/container-seccomp -list            # the additions' names
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sandbox-exec/pyexec/deploy/check/containerseccomp"
)

func main() {
	without := flag.String("without", "", "comma-separated additions to leave out")
	list := flag.Bool("list", false, "print the additions' names, one a line, and exit")
	flag.Parse()
	if *list {
		for _, a := range containerseccomp.Additions() {
			fmt.Println(a.Name)
		}
		return
	}
	var names []string
	if *without != "" {
		names = strings.Split(*without, ",")
	}
	out, err := containerseccomp.Build(names...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "container-seccomp:", err)
		os.Exit(2)
	}
	os.Stdout.Write(out)
}
