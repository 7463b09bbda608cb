package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// TestMsgReaderAllocatesAsBytesArrive: a message that announces 200 MB and delivers 1000 bytes makes
// the reader allocate about what arrived, not the announced length; complete messages of every size
// around the growth steps come out intact.
func TestMsgReaderAllocatesAsBytesArrive(t *testing.T) {
	hdr := binary.BigEndian.AppendUint32([]byte{'Q'}, 200<<20)
	stream := append(hdr, bytes.Repeat([]byte{'x'}, 1000)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := newMsgReader(bytes.NewReader(stream), 16<<10, 256<<20)
	_, _, err := m.next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated message: %v, want io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
		t.Errorf("reading 1000 bytes of a message announced as 200 MB allocated %d bytes, want < 64 KiB", got)
	}

	for _, size := range []int{0, 1, 8187, 8188, 8189, 16 << 10, 100000, 3 << 20} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		msg := append(binary.BigEndian.AppendUint32([]byte{'d'}, uint32(size+4)), body...)
		stream := append(append(append([]byte(nil), msg...), msg...), 'S', 0, 0, 0, 4)
		m := newMsgReader(iotestOneByte(stream), 16<<10, 256<<20)
		for i := range 2 {
			typ, got, err := m.next()
			if err != nil || typ != 'd' || !bytes.Equal(got, msg) {
				t.Fatalf("size %d, message %d: type %q, %d bytes, %v", size, i, typ, len(got), err)
			}
		}
		if typ, _, err := m.next(); err != nil || typ != 'S' {
			t.Fatalf("size %d: the message after: %q, %v", size, typ, err)
		}
	}
}

// iotestOneByte returns a reader that delivers b in small irregular pieces, as a slow peer does.
func iotestOneByte(b []byte) io.Reader { return &piecewise{b: b} }

type piecewise struct {
	b []byte
	n int
}

func (p *piecewise) Read(dst []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	p.n++
	k := min(len(dst), len(p.b), 1+p.n%5000)
	copy(dst, p.b[:k])
	p.b = p.b[k:]
	return k, nil
}
