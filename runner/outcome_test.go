package runner

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestClassify is the table of every outcome an execution can have and
// what the runner makes of it.
func TestClassify(t *testing.T) {
	limits := Limits{Timeout: time.Second, CPUTime: 2 * time.Second, OutputBytes: 8, ResultBytes: 20}
	killed := exitReport{Status: int(syscall.SIGKILL)}
	segv := exitReport{Status: int(syscall.SIGSEGV)}
	cpuSpent := exitReport{Status: int(syscall.SIGKILL), CPUMicros: 2_000_000}
	exited3 := exitReport{Status: 3 << 8}
	failure := func(kind string) *errorFrame {
		return &errorFrame{Type: msgError, Kind: kind, Message: "m"}
	}
	tests := []struct {
		name       string
		o          outcome
		wantResult string
		wantKind   Kind  // "" with wantErr: not a ScriptError
		wantErr    error // checked with errors.Is when set
	}{
		{name: "result", o: outcome{result: &resultFrame{Result: []byte(` {"a" : [1, "<"]} `)}}, wantResult: `{"a":[1,"<"]}`},
		{name: "result over the cap", o: outcome{result: &resultFrame{Result: []byte(`"0123456789abcdefghijkl"`)}}, wantKind: KindOutputLimit},
		{name: "result not UTF-8", o: outcome{result: &resultFrame{Result: []byte("\"\xff\"")}}, wantKind: KindProtocolError},
		{name: "result with a lone surrogate", o: outcome{result: &resultFrame{Result: []byte(`"\ud800"`)}}, wantKind: KindProtocolError},
		{name: "result NaN", o: outcome{result: &resultFrame{Result: []byte(`NaN`)}}, wantKind: KindProtocolError},
		{name: "result with a key twice", o: outcome{result: &resultFrame{Result: []byte(`{"a":false,"a":true}`)}}, wantKind: KindProtocolError},
		{name: "batch item with a key twice", o: outcome{batchSize: 2, batch: &batchReply{started: true, end: &resultsFrame{},
			items: []batchItem{{frame: itemFrame{Result: []byte(`1`)}}, {frame: itemFrame{Index: 1, Result: []byte(`[{"a":1,"\u0061":2}]`)}}}}}, wantKind: KindProtocolError},
		{name: "batch that failed before its inputs", o: outcome{batchSize: 2, batch: &batchReply{failed: failure("script_error")}}, wantKind: KindScriptError},
		{name: "batch cut short by the zygote's death", o: outcome{batchSize: 2, channelErr: io.EOF, zygoteDied: true,
			batch: &batchReply{started: true, items: []batchItem{{frame: itemFrame{Result: []byte(`1`)}}}}}, wantErr: ErrZygoteDied},
		// msgpack results (ResultMsgpack): passed on as they are, once strict.
		{name: "msgpack result", o: outcome{msgpackResult: true, result: &resultFrame{Result: []byte{0x81, 0xa1, 'b', 0xc4, 1, 0xff}}}, wantResult: "\x81\xa1b\xc4\x01\xff"},
		{name: "msgpack result with a key twice", o: outcome{msgpackResult: true, result: &resultFrame{Result: []byte{0x82, 0xa1, 'a', 1, 0xa1, 'a', 2}}}, wantKind: KindProtocolError},
		{name: "msgpack result not UTF-8", o: outcome{msgpackResult: true, result: &resultFrame{Result: []byte{0xa1, 0xff}}}, wantKind: KindProtocolError},
		{name: "msgpack result with an ext", o: outcome{msgpackResult: true, result: &resultFrame{Result: []byte{0xd4, 1, 0}}}, wantKind: KindProtocolError},
		{name: "msgpack result with bytes after it", o: outcome{msgpackResult: true, result: &resultFrame{Result: []byte{1, 2}}}, wantKind: KindProtocolError},
		{name: "msgpack result claiming more than it has", o: outcome{msgpackResult: true, result: &resultFrame{Result: []byte{0xdd, 0xff, 0xff, 0xff, 0xff}}}, wantKind: KindProtocolError},
		{name: "JSON text where msgpack was asked", o: outcome{msgpackResult: true, result: &resultFrame{Result: []byte(`[1,2]`)}}, wantKind: KindProtocolError},
		{name: "msgpack batch item with a key twice", o: outcome{msgpackResult: true, batchSize: 2, batch: &batchReply{started: true, end: &resultsFrame{},
			items: []batchItem{{frame: itemFrame{Result: []byte{1}}}, {frame: itemFrame{Index: 1, Result: []byte{0x82, 1, 1, 1, 2}}}}}}, wantKind: KindProtocolError},
		{name: "script error", o: outcome{failed: failure("script_error")}, wantKind: KindScriptError},
		{name: "memory error raised in the script", o: outcome{failed: failure("memory_limit")}, wantKind: KindMemoryLimit},
		{name: "kind the sandbox may not report", o: outcome{failed: failure("sandbox_crashed")}, wantKind: KindProtocolError},
		{name: "unknown kind", o: outcome{failed: failure("internal")}, wantKind: KindProtocolError},
		{name: "error text not UTF-8", o: outcome{failed: &errorFrame{Kind: "script_error", Message: "\xff"}}, wantKind: KindProtocolError},
		{name: "error text too long", o: outcome{failed: &errorFrame{Kind: "script_error", Message: string(make([]byte, maxErrorMessage+1))}}, wantKind: KindProtocolError},
		{name: "output over the cap wins over a reply", o: outcome{overflowed: true, overflow: "stderr", result: &resultFrame{Result: []byte(`1`)}}, wantKind: KindOutputLimit},
		{name: "caller went away", o: outcome{abandoned: context.Canceled, exit: killed, exitKnown: true}, wantErr: context.Canceled},
		{name: "wall deadline", o: outcome{deadlineHit: true, exit: killed, exitKnown: true}, wantKind: KindTimeout},
		{name: "reply frame over the cap", o: outcome{channelErr: errFrameTooLarge}, wantKind: KindOutputLimit},
		{name: "malformed reply", o: outcome{channelErr: errMalformed, exit: exited3, exitKnown: true}, wantKind: KindProtocolError},
		{name: "zygote died", o: outcome{channelErr: io.EOF, zygoteDied: true}, wantErr: ErrZygoteDied},
		{name: "crash", o: outcome{channelErr: io.EOF, exit: segv, exitKnown: true}, wantKind: KindCrashed},
		{name: "killed after its whole CPU allowance", o: outcome{channelErr: io.EOF, exit: cpuSpent, exitKnown: true}, wantKind: KindTimeout},
		{name: "killed before its CPU allowance", o: outcome{channelErr: io.EOF, exit: killed, exitKnown: true}, wantKind: KindCrashed},
		{name: "killed by the OOM killer of its cgroup", o: outcome{channelErr: io.EOF, exit: killed, exitKnown: true, oomKilled: true}, wantKind: KindMemoryLimit},
		{name: "killed by the OOM killer, then the deadline passed", o: outcome{deadlineHit: true, exit: killed, exitKnown: true, oomKilled: true}, wantKind: KindMemoryLimit},
		{name: "SIGXCPU", o: outcome{channelErr: io.EOF, exit: exitReport{Status: int(syscall.SIGXCPU)}, exitKnown: true}, wantKind: KindTimeout},
		{name: "exit before main returned", o: outcome{channelErr: io.EOF, exit: exited3, exitKnown: true}, wantKind: KindScriptError},
		{name: "nothing known", o: outcome{channelErr: os.ErrDeadlineExceeded}, wantErr: os.ErrDeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := classify(tc.o, limits)
			if tc.wantResult != "" {
				if err != nil || string(out.Result) != tc.wantResult {
					t.Fatalf("got %s, %v; want %s", out.Result, err, tc.wantResult)
				}
				return
			}
			var se *ScriptError
			switch {
			case tc.wantKind != "":
				if !errors.As(err, &se) || se.Kind != tc.wantKind {
					t.Fatalf("err = %v, want a %s", err, tc.wantKind)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) || errors.As(err, &se) {
					t.Fatalf("err = %v, want a service error wrapping %v", err, tc.wantErr)
				}
			}
		})
	}
}

func TestClassifyKeepsOutputAndUsage(t *testing.T) {
	o := outcome{channelErr: io.EOF, exit: exitReport{Status: int(syscall.SIGSEGV), CPUMicros: 1500, MaxRSSKB: 900}, exitKnown: true,
		stdout: []byte("0123456789"), stderr: []byte("e")}
	out, _ := classify(o, Limits{OutputBytes: 4})
	if string(out.Stdout) != "0123" || string(out.Stderr) != "e" || out.Usage.CPU != 1500*time.Microsecond || out.Usage.MaxRSSKB != 900 {
		t.Errorf("output %+v", out)
	}
}

// TestClassifyBatchCutShort: a batch whose sandbox ended mid-way keeps its
// finished inputs; the input that was running gets why it ended, with
// what it printed; the inputs after it are not_run.
func TestClassifyBatchCutShort(t *testing.T) {
	limits := Limits{Timeout: time.Second, CPUTime: 2 * time.Second, OutputBytes: 8, ResultBytes: 20}
	finished := []batchItem{
		{frame: itemFrame{Result: []byte(`1`)}, stdout: []byte("one\n")},
		{frame: itemFrame{Index: 1, Kind: "script_error", Message: "m"}, stderr: []byte("two\n")},
	}
	for _, tc := range []struct {
		name string
		o    outcome
		want Kind
	}{
		{"timeout", outcome{deadlineHit: true, exit: exitReport{Status: int(syscall.SIGKILL)}, exitKnown: true}, KindTimeout},
		{"segfault", outcome{channelErr: io.EOF, exit: exitReport{Status: int(syscall.SIGSEGV)}, exitKnown: true}, KindCrashed},
		{"os._exit", outcome{channelErr: io.EOF, exit: exitReport{Status: 3 << 8}, exitKnown: true}, KindScriptError},
		{"out of memory", outcome{channelErr: io.EOF, oomKilled: true, exit: exitReport{Status: int(syscall.SIGKILL)}, exitKnown: true}, KindMemoryLimit},
		{"the batch's own output over the cap", outcome{overflowed: true, overflow: "stdout"}, KindOutputLimit},
		{"an input's output over the cap", outcome{channelErr: errBatchStopped}, KindOutputLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.batchSize = 4
			o.batch = &batchReply{started: true, items: finished, current: batchItem{stdout: []byte("thr")}}
			if o.channelErr == errBatchStopped {
				o.batch.stopped = &ScriptError{Kind: KindOutputLimit, Message: "m"}
			}
			out, err := classify(o, limits)
			if err != nil {
				t.Fatalf("err %v: a batch cut short still answers its items", err)
			}
			if len(out.Items) != 4 {
				t.Fatalf("%d items, want 4", len(out.Items))
			}
			if string(out.Items[0].Result) != "1" || string(out.Items[0].Stdout) != "one\n" ||
				out.Items[1].Err == nil || out.Items[1].Err.Kind != KindScriptError || string(out.Items[1].Stderr) != "two\n" {
				t.Errorf("finished items lost: %+v %+v", out.Items[0], out.Items[1])
			}
			if out.Items[2].Err == nil || out.Items[2].Err.Kind != tc.want || string(out.Items[2].Stdout) != "thr" {
				t.Errorf("the running input: %+v, want %s with its output", out.Items[2], tc.want)
			}
			if out.Items[3].Err == nil || out.Items[3].Err.Kind != KindNotRun {
				t.Errorf("the input after it: %+v, want not_run", out.Items[3])
			}
		})
	}
}
