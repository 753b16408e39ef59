// Package python holds the Python half of the sandbox: the package pyexec
// (the zygote, the isolation steps, running one script) and the bootstrap
// that starts it inside the jail. The Go side embeds both, so the binary is
// self-contained and there is one copy of the source: runner starts the
// interpreter with "python3 -c <boot.py>" and passes the modules on its
// command line. runner/protocol.go is the contract both halves speak.
package python

import (
	"embed"
	"io/fs"
	"path"
	"sort"
	"strings"
)

//go:embed boot.py pyexec/*.py
var files embed.FS

// Module is one module of the package pyexec.
type Module struct {
	// Name is the dotted module name, e.g. "pyexec.zygote".
	Name string
	// Source is its Python source.
	Source string
}

// Program is what the runner starts in the jail.
type Program struct {
	// Boot is the source of boot.py, passed with -c.
	Boot string
	// Modules are the package's modules, passed as name and source pairs.
	Modules []Module
}

// Load returns the embedded program.
func Load() (Program, error) {
	boot, err := files.ReadFile("boot.py")
	if err != nil {
		return Program{}, err
	}
	names, err := fs.Glob(files, "pyexec/*.py")
	if err != nil {
		return Program{}, err
	}
	sort.Strings(names)
	p := Program{Boot: string(boot)}
	for _, name := range names {
		src, err := files.ReadFile(name)
		if err != nil {
			return Program{}, err
		}
		module := strings.TrimSuffix(name, ".py")
		if path.Base(module) == "__init__" {
			module = path.Dir(module)
		}
		p.Modules = append(p.Modules, Module{Name: strings.ReplaceAll(module, "/", "."), Source: string(src)})
	}
	return p, nil
}
