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

// TestMsgReaderResumesAfterTimeout: a read deadline that fires in the middle of a message (the
// session is woken that way during COPY FROM STDIN) loses none of its bytes; the next call returns the
// whole message.
func TestMsgReaderResumesAfterTimeout(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 3000) // larger than the first buffer: it grows too
	msg := binary.BigEndian.AppendUint32([]byte{'d'}, uint32(4+len(body)))
	msg = append(msg, body...)
	msg = append(msg, 'c', 0, 0, 0, 4)
	// Every cut point: the first part, a timeout, then the rest.
	for _, cut := range []int{1, 3, 5, 6, 100, 8192, 8197, len(msg) - 6} {
		r := &timeoutAt{b: msg, at: cut}
		m := newMsgReader(r, 64, 1<<20)
		typ, _, err := m.next()
		if !errors.Is(err, errTestTimeout) {
			t.Fatalf("cut %d: first read %q, %v; want the timeout", cut, typ, err)
		}
		typ, got, err := m.next()
		if err != nil || typ != 'd' || !bytes.Equal(got, msg[:len(msg)-5]) {
			t.Fatalf("cut %d: after the timeout: %q, %d bytes, %v", cut, typ, len(got), err)
		}
		if typ, _, err = m.next(); err != nil || typ != 'c' {
			t.Fatalf("cut %d: next message: %q, %v", cut, typ, err)
		}
	}
}

var errTestTimeout = errors.New("test timeout")

// timeoutAt delivers b with a timeout once the first at bytes are read.
type timeoutAt struct {
	b     []byte
	at    int
	off   int
	fired bool
}

func (r *timeoutAt) Read(dst []byte) (int, error) {
	if r.off == len(r.b) {
		return 0, io.EOF
	}
	end := len(r.b)
	if !r.fired {
		if r.off == r.at {
			r.fired = true
			return 0, errTestTimeout
		}
		end = r.at
	}
	n := copy(dst, r.b[r.off:end])
	r.off += n
	return n, nil
}

// TestInternalName: a statement's server-side name is "mdn_" and the first 128 bits of SHA-256 over
// text, NUL, parameter types — the same on every proxy and release (servers keep statements under
// it); texts longer than the stack buffer give the same as short ones would.
func TestInternalName(t *testing.T) {
	for _, tc := range []struct {
		sql        string
		paramTypes []byte
		want       string
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = $1", []byte{0, 1, 0, 0, 0, 23}, "mdn_86db3822987dd136e8aa5c381f5ab37c"},
		{"", []byte{0, 0}, "mdn_709e80c88487a2411e1ee4dfb9f22a86"},
		{string(bytes.Repeat([]byte{'x'}, 600)), []byte{0, 0}, "mdn_7458a5d7aa811a47eff708140476207f"},
	} {
		if got := internalName(tc.sql, tc.paramTypes); got != tc.want {
			t.Errorf("internalName(%.20q, %v) = %s, want %s", tc.sql, tc.paramTypes, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { internalName("SELECT 1", []byte{0, 0}) }); n != 1 {
		t.Errorf("internalName allocates %v times, want 1 (the name)", n)
	}
}
