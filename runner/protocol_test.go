package runner

import (
	"bytes"
	"errors"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := replyMessage{Type: msgError, Kind: "script_error", Message: "boom", Line: 3}
	if err := writeFrame(&buf, &in); err != nil {
		t.Fatal(err)
	}
	var out replyMessage
	if err := readFrame(&buf, 1<<10, &out); err != nil {
		t.Fatal(err)
	}
	if out.Type != in.Type || out.Kind != in.Kind || out.Message != in.Message || out.Line != in.Line {
		t.Errorf("got %+v, want %+v", out, in)
	}
}

func TestReadFrameRefusesOversizedFrames(t *testing.T) {
	frame := []byte{0, 0, 0x10, 0}
	var out replyMessage
	if err := readFrame(bytes.NewReader(frame), 1<<10, &out); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("err = %v, want errFrameTooLarge", err)
	}
}

// A hostile sandbox can write any bytes on its channel: reading them must
// never panic nor allocate more than the frame holds.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	_ = writeFrame(&buf, &replyMessage{Type: msgResult, Result: []byte(`{"a":1}`)})
	f.Add(buf.Bytes())
	f.Add([]byte("\x00\x00\x00\x07\xc9H\x13\x91t\xeb\x99"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var out replyMessage
		_ = readFrame(bytes.NewReader(b), 1<<16, &out)
	})
}
