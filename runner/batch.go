package runner

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
)

// errBatchStopped says the runner stopped reading a batch before its end
// because an input passed a cap (batchReply.stopped says which): the
// sandbox is killed at once, the finished inputs are kept.
var errBatchStopped = errors.New("batch stopped at a cap")

// batchReply is what a batch's sandbox sent, as far as it got.
type batchReply struct {
	// started says the script ran and its inputs began.
	started bool
	// items are the finished inputs, in order, each with what it printed.
	items []batchItem
	// current is what the input being run printed so far.
	current batchItem
	// end closes a batch whose inputs were all answered; failed is an
	// error instead (before started: the script's; after the last input:
	// the batch's output files).
	end    *resultsFrame
	failed *errorFrame
	// stopped is the cap the input being run passed (output_limit).
	stopped *ScriptError
	// resultBytes counts the finished results together; printed, what the
	// inputs printed together, per stream (stdout, stderr).
	resultBytes int
	printed     [2]int
}

// batchItem is one input's outcome and what its Python code printed.
type batchItem struct {
	frame          itemFrame
	stdout, stderr []byte
}

// complete says the sandbox answered the whole batch, one way or another.
func (b *batchReply) complete() bool { return b.end != nil || b.failed != nil }

// maxBatchFrame bounds one frame of a batch: an item's result and error
// texts, or the end's output files.
func maxBatchFrame(limits Limits) int {
	return limits.ResultBytes + limits.FilesBytes + limits.MaxFiles*(maxFileNameBytes+16) +
		maxErrorMessage + maxErrorTraceback + maxReplyEnvelope
}

// readBatch reads a batch's frames into b until its end, an error frame,
// a cap passed (errBatchStopped), or the channel's end (the read's own
// error: EOF, deadline). Frames out of the protocol's order, an output
// that is empty or not UTF-8, and an item of the wrong index are
// errMalformed. What the inputs print is bounded by limits.OutputBytes per
// stream together, and their results together by limits.ResultBytes.
func readBatch(r io.Reader, limits Limits, n int, b *batchReply) error {
	opts := msgpackcheck.Options{MaxDepth: maxFrameDepth, MaxLen: replyShape{Batch: n, MaxFiles: limits.MaxFiles}.maxLen()}
	for {
		payload, err := readFramePayload(r, maxBatchFrame(limits))
		if err != nil {
			return err
		}
		typ, err := messageType(payload, opts)
		if err != nil {
			return err
		}
		running := b.started && len(b.items) < n
		switch {
		case typ == msgError && (!b.started || len(b.items) == n):
			var e errorFrame
			if err := decodeStrict(payload, &e); err != nil {
				return err
			}
			b.failed = &e
			return nil
		case typ == msgStarted && !b.started:
			var f startedFrame
			if err := decodeStrict(payload, &f); err != nil {
				return err
			}
			b.started = true
		case typ == msgOutput && running:
			var f outputFrame
			if err := decodeStrict(payload, &f); err != nil {
				return err
			}
			if err := b.addOutput(f, limits.OutputBytes); err != nil {
				return err
			}
		case typ == msgItem && running:
			var f itemFrame
			if err := decodeStrict(payload, &f); err != nil {
				return err
			}
			if f.Index != len(b.items) {
				return fmt.Errorf("%w: item %d where item %d was due", errMalformed, f.Index, len(b.items))
			}
			if f.Kind == "" {
				b.resultBytes += len(f.Result)
				if limits.ResultBytes > 0 && b.resultBytes > limits.ResultBytes {
					b.stopped = &ScriptError{Kind: KindOutputLimit,
						Message: fmt.Sprintf("the batch's results passed the cap of %d bytes together at input %d", limits.ResultBytes, f.Index)}
					return errBatchStopped
				}
			}
			b.current.frame = f
			b.items = append(b.items, b.current)
			b.current = batchItem{}
		case typ == msgResults && b.started && len(b.items) == n:
			var f resultsFrame
			if err := decodeStrict(payload, &f); err != nil {
				return err
			}
			b.end = &f
			return nil
		default:
			return fmt.Errorf("%w: a frame of type %q after %d of %d inputs", errMalformed, clip(typ, 40), len(b.items), n)
		}
	}
}

// addOutput adds an output frame to the current input's output. The cap
// is on what the inputs print together, per stream, as it is on a single
// script's output: a batch of n inputs cannot hold n times the cap.
func (b *batchReply) addOutput(f outputFrame, limit int) error {
	var stream *[]byte
	var total *int
	switch f.Stream {
	case "stdout":
		stream, total = &b.current.stdout, &b.printed[0]
	case "stderr":
		stream, total = &b.current.stderr, &b.printed[1]
	default:
		return fmt.Errorf("%w: output to stream %q", errMalformed, clip(f.Stream, 40))
	}
	if f.Text == "" || !utf8.ValidString(f.Text) {
		return fmt.Errorf("%w: an output frame that is empty or not UTF-8", errMalformed)
	}
	if limit > 0 && *total+len(f.Text) > limit {
		*stream = append(*stream, f.Text[:limit-*total]...)
		b.stopped = &ScriptError{Kind: KindOutputLimit,
			Message: fmt.Sprintf("the batch's inputs printed more than %d bytes to %s (at input %d); the sandbox was killed", limit, f.Stream, len(b.items))}
		return errBatchStopped
	}
	*stream = append(*stream, f.Text...)
	*total += len(f.Text)
	return nil
}

// judgeBatch turns a batch's frames into its items. A whole batch: each
// item checked (a strict JSON or msgpack result, as asked, or an error the
// sandbox may report)
// and the output files. A batch cut short: the finished inputs keep their
// results, the input that was running gets why the batch ended (ended, its
// error: a timeout, a crash, the memory or output limit, the script ending
// the interpreter) with what it printed, and the inputs after it are
// not_run. What ended the service's side (the caller gone, the zygote
// dead) and a malformed frame are the whole request's error, as is a
// failure of the batch's output files; then what the inputs printed is
// kept in the batch's own output.
func judgeBatch(out Output, b *batchReply, n int, asMsgpack bool, ended error, limits Limits) (Output, error) {
	items := make([]ItemOutput, 0, n)
	for i, item := range b.items {
		o := ItemOutput{Stdout: item.stdout, Stderr: item.stderr}
		if item.frame.Kind == "" {
			judged, err := judgeResult(Output{}, &resultFrame{Result: item.frame.Result}, asMsgpack, limits)
			if err != nil {
				return withItemOutput(out, b, limits.OutputBytes), err
			}
			o.Result = judged.Result
		} else {
			err := judgeFailure(&errorFrame{Kind: item.frame.Kind, Message: item.frame.Message,
				Traceback: item.frame.Traceback, Line: item.frame.Line, Offset: item.frame.Offset})
			var se *ScriptError
			if !errors.As(err, &se) || se.Kind == KindProtocolError {
				return withItemOutput(out, b, limits.OutputBytes), fmt.Errorf("item %d: %w", i, err)
			}
			o.Err = se
		}
		items = append(items, o)
	}
	switch {
	case b.failed != nil:
		return withItemOutput(out, b, limits.OutputBytes), judgeFailure(b.failed)
	case b.end != nil && ended == nil:
		files, err := judgeFiles(b.end.Files, limits)
		if err != nil {
			return withItemOutput(out, b, limits.OutputBytes), err
		}
		out.Items, out.Files = items, files
		return out, nil
	}
	why := b.stopped
	if why == nil {
		var se *ScriptError
		if !errors.As(ended, &se) || se.Kind == KindProtocolError || len(items) == n {
			return withItemOutput(out, b, limits.OutputBytes), ended
		}
		why = se
	}
	items = append(items, ItemOutput{Err: why, Stdout: b.current.stdout, Stderr: b.current.stderr})
	failed := len(items) - 1
	for i := len(items); i < n; i++ {
		items = append(items, ItemOutput{Err: &ScriptError{Kind: KindNotRun,
			Message: fmt.Sprintf("not run: input %d ended the batch (%s)", failed, why.Kind)}})
	}
	out.Items = items
	return out, nil
}

// withItemOutput adds what the inputs printed to the batch's own output,
// for an answer that fails as a whole.
func withItemOutput(out Output, b *batchReply, limit int) Output {
	stdout, stderr := append([]byte(nil), out.Stdout...), append([]byte(nil), out.Stderr...)
	for _, item := range append(b.items, b.current) {
		stdout = append(stdout, item.stdout...)
		stderr = append(stderr, item.stderr...)
	}
	out.Stdout, out.Stderr = truncate(stdout, limit), truncate(stderr, limit)
	return out
}
