package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/runner"
)

// plotScript is README's plot example: a chart drawn with pandas and
// matplotlib, saved to the output directory, so it comes back as a file.
const plotScript = `import matplotlib.pyplot as plt
import pandas as pd

def main():
    df = pd.DataFrame({"month": ["Jan", "Feb", "Mar", "Apr"], "sales": [120, 135, 160, 150]})
    ax = df.plot(x="month", y="sales", kind="bar", title="Sales by month", legend=False)
    ax.figure.savefig("output/chart.png", dpi=100)
    plt.close("all")
    return {"months": len(df)}
`

// TestPlot renders a chart in a sandbox through the whole path, with and
// without matplotlib preloaded in the zygote, under every jail found (and
// in exec mode, whose zygote is a fresh interpreter per sandbox), and
// checks the PNG that comes back: its signature, its size in pixels (the
// default 6.4 × 4.8 in at 100 dpi) and a plausible size in bytes. Nothing
// may reach stderr: matplotlib warns there about a config or cache
// directory it cannot write, or a font it cannot find.
func TestPlot(t *testing.T) {
	type variant struct{ name, mode, preload string }
	variants := []variant{
		{"fork", "fork", "numpy,pandas"},
		{"fork-preloaded", "fork", "numpy,pandas,matplotlib"},
		{"exec-preloaded", "exec", "numpy,pandas,matplotlib"},
	}
	for _, jail := range jailBackends(t) {
		for _, v := range variants {
			t.Run(jail[1]+"/"+v.name, func(t *testing.T) {
				args := append([]string{"--mode", v.mode, "--warm", "1", "--preload", v.preload, "--acquire-timeout", "60s"}, jail...)
				s := startServer(t, "", args...)
				var got struct{ Months int }
				start := time.Now()
				r := s.mustSucceed(t, plotScript, map[string]any{"timeout_ms": 30000}, &got)
				t.Logf("%s: chart in %v (exec %.0f ms)", v.name, time.Since(start).Round(time.Millisecond), r.Timing.ExecMS)
				if r.Stderr != "" {
					t.Errorf("stderr %q", r.Stderr)
				}
				chart, ok := r.Files["chart.png"]
				if got.Months != 4 || !ok || chart.MediaType != "image/png" || chart.Size != len(chart.Content) {
					t.Fatalf("result %+v, files %v: want the chart back as output/chart.png", got, slices.Collect(maps.Keys(r.Files)))
				}
				checkPNG(t, base64.StdEncoding.EncodeToString(chart.Content), 640, 480)
				if v.preload == "numpy,pandas,matplotlib" && v.mode == "fork" {
					// The zygote imported with a /tmp of its own; the
					// sandbox must still write only to its own /tmp and
					// /dev/shm.
					var survey struct {
						Planted []string `json:"planted"`
						RW      []struct {
							Point string `json:"point"`
						} `json:"rw_mounts"`
					}
					s.mustSucceed(t, writableSurvey, map[string]any{"input": "first", "timeout_ms": 20000}, &survey)
					var points []string
					for _, m := range survey.RW {
						points = append(points, m.Point)
					}
					slices.Sort(points)
					// Directories under the sandbox's own /tmp count as
					// /tmp (the preloaded sandbox has /tmp/matplotlib).
					planted := slices.DeleteFunc(survey.Planted, func(p string) bool { return strings.HasPrefix(p, "/tmp/") })
					if strings.Join(planted, " ") != "/dev/shm /tmp" || strings.Join(points, " ") != "/dev/shm /tmp" {
						t.Errorf("writable directories %v and mounts %v, want only /dev/shm and /tmp", survey.Planted, points)
					}
				}
			})
		}
	}
}

// checkPNG decodes b64 and checks it is a PNG of width × height pixels of
// a plausible size for a simple chart.
func checkPNG(t *testing.T, b64 string, width, height uint32) {
	t.Helper()
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("result is not base64: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 33 || string(png[12:16]) != "IHDR" {
		t.Fatalf("not a PNG: % x", png[:min(len(png), 16)])
	}
	w, h := binary.BigEndian.Uint32(png[16:20]), binary.BigEndian.Uint32(png[20:24])
	if w != width || h != height {
		t.Errorf("PNG is %d×%d, want %d×%d", w, h, width, height)
	}
	if len(png) < 5_000 || len(png) > 500_000 {
		t.Errorf("PNG of %d bytes: not a plausible chart", len(png))
	}
}

// roTestDir makes a directory for --ro-paths outside /tmp (refused: it is
// the host's scratch space), readable by the jail's unprivileged uid.
func roTestDir(t *testing.T) string {
	t.Helper()
	// Not under /tmp (refused): beside the test, unless the checkout is
	// under /tmp itself, else under /var/lib, /srv or /opt.
	var dir string
	for _, base := range []string{".", "/var/lib", "/srv", "/opt"} {
		abs, err := filepath.Abs(base)
		if err != nil || runner.CheckReadOnlyPath(abs) != nil {
			continue
		}
		if dir, err = os.MkdirTemp(abs, "ro-path-test-"); err == nil {
			break
		}
	}
	if dir == "" {
		t.Skip("no directory outside /tmp to make a test directory in")
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.csv"), []byte("x,y\n1,2\n3,4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestReadOnlyPaths: a path added with --ro-paths is readable in the
// sandbox, at the same place, and not writable, under every jail found; a
// missing one is skipped with a warning.
func TestReadOnlyPaths(t *testing.T) {
	dir := roTestDir(t)
	for _, jail := range jailBackends(t) {
		t.Run(jail[1], func(t *testing.T) {
			missing := "/srv/pyexec-test-not-here"
			s := startServer(t, "", append([]string{"--mode", "fork", "--warm", "1", "--ro-paths", dir + "," + missing}, jail...)...)
			var got map[string]any
			s.mustSucceed(t, `import os, errno
import pandas as pd
def main(d):
    out = {"sum": int(pd.read_csv(os.path.join(d, "data.csv")).sum().sum())}
    for name, act in [("new file", lambda: open(os.path.join(d, "new"), "w")),
                      ("overwrite", lambda: open(os.path.join(d, "data.csv"), "a")),
                      ("mkdir", lambda: os.mkdir(os.path.join(d, "sub"))),
                      ("chmod", lambda: os.chmod(os.path.join(d, "data.csv"), 0o777))]:
        try:
            act()
            out[name] = "allowed"
        except OSError as e:
            out[name] = errno.errorcode[e.errno]
    return out
`, map[string]any{"input": dir}, &got)
			if got["sum"] != float64(10) {
				t.Errorf("read %v, want the file's sum 10", got["sum"])
			}
			for _, what := range []string{"new file", "overwrite", "mkdir", "chmod"} {
				if got[what] != "EROFS" && got[what] != "EACCES" && got[what] != "EPERM" {
					t.Errorf("%s in the read-only path: %v, want EROFS, EACCES or EPERM", what, got[what])
				}
			}
			if !strings.Contains(s.logs.String(), missing) {
				t.Errorf("no warning about the missing path %s in the log", missing)
			}
		})
	}
}

// TestReadOnlyPathRefused: a path that would weaken the jail stops the
// start with an error naming it, before any sandbox is made.
func TestReadOnlyPathRefused(t *testing.T) {
	requireJail(t)
	for _, path := range []string{"/", "/etc", "/proc", "/var/run/docker.sock", "/tmp", "relative/path"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := run(ctx, []string{"--addr", "127.0.0.1:0", "--jail", "bwrap", "--ro-paths", "/usr/share/fonts," + path},
			func(string) string { return "" }, io.Discard, nil)
		cancel()
		if !errors.Is(err, runner.ErrPathRefused) || !strings.Contains(err.Error(), path) {
			t.Errorf("--ro-paths %s: got %v, want a refusal naming it", path, err)
		}
	}
}

func TestReadOnlyPathsFlagAndEnvironment(t *testing.T) {
	env := func(k string) string { return map[string]string{"PYEXEC_RO_PATHS": "/srv/a, /srv/b"}[k] }
	o, err := parseOptions(nil, env, io.Discard)
	if err != nil || strings.Join(o.roPaths.paths, " ") != "/srv/a /srv/b" {
		t.Errorf("from the environment: %v %v", o.roPaths.paths, err)
	}
	// The command line replaces the variable's list; the flag repeats.
	o, err = parseOptions([]string{"--ro-paths", "/srv/c", "--ro-paths", "/srv/d,/srv/e"}, env, io.Discard)
	if err != nil || strings.Join(o.roPaths.paths, " ") != "/srv/c /srv/d /srv/e" {
		t.Errorf("from flags: %v %v", o.roPaths.paths, err)
	}
}

// TestFlagsAreDocumented keeps the flag table of docs/operations.md true:
// every flag has a row with its PYEXEC_* variable, and every row names a
// flag that exists.
func TestFlagsAreDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `--([a-z-]+)`(?:, `--([a-z-]+)`)? \\| `(PYEXEC_[A-Z_]+)`(?:, `(PYEXEC_[A-Z_]+)`)? \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = m[3]
		if m[2] != "" {
			documented[m[2]] = m[4]
		}
	}
	var help bytes.Buffer
	_, _ = parseOptions([]string{"--help"}, func(string) string { return "" }, &help)
	flags := regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(help.String(), -1)
	if len(flags) < 10 {
		t.Fatalf("found only %d flags in --help: the parser is out of date", len(flags))
	}
	seen := map[string]bool{"help": true, "version": true}
	for _, f := range flags {
		name := f[1]
		seen[name] = true
		if name == "version" {
			continue
		}
		if v, ok := documented[name]; !ok {
			t.Errorf("--%s has no row in the flag table of docs/operations.md", name)
		} else if v != envName(name) {
			t.Errorf("docs/operations.md gives --%s the variable %s, want %s", name, v, envName(name))
		}
	}
	for name := range documented {
		if !seen[name] {
			t.Errorf("docs/operations.md documents --%s, which does not exist", name)
		}
	}
}
