package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Protocol message type bytes (https://www.postgresql.org/docs/15/protocol-message-formats.html).
// The proxy forwards most messages as raw bytes without decoding them — the hot path of a pooler is
// copying DataRows — and decodes with pgproto3 only what it must understand or rewrite.
const (
	// frontend
	msgQuery     = 'Q'
	msgParse     = 'P'
	msgBind      = 'B'
	msgDescribe  = 'D'
	msgExecute   = 'E'
	msgClose     = 'C'
	msgSync      = 'S'
	msgFlush     = 'H'
	msgTerminate = 'X'
	msgFuncCall  = 'F'
	msgCopyData  = 'd'
	msgCopyDone  = 'c'
	msgCopyFail  = 'f'

	// backend
	msgParseComplete        = '1'
	msgBindComplete         = '2'
	msgCloseComplete        = '3'
	msgCommandComplete      = 'C'
	msgDataRow              = 'D'
	msgErrorResponse        = 'E'
	msgCopyIn               = 'G'
	msgCopyOut              = 'H'
	msgCopyBoth             = 'W'
	msgEmptyQuery           = 'I'
	msgNoData               = 'n'
	msgParameterDescription = 't'
	msgNotice               = 'N'
	msgNotification         = 'A'
	msgParamDesc            = 't'
	msgParamStatus          = 'S'
	msgPortalSuspended      = 's'
	msgReadyForQuery        = 'Z'
	msgRowDescription       = 'T'
	msgFuncResult           = 'V'
)

// ErrMessageTooLarge is returned when a peer announces a message longer than the configured maximum.
var ErrMessageTooLarge = errors.New("protocol message too large")

// errMalformed marks protocol violations by a peer.
var errMalformed = errors.New("malformed protocol message")

// msgReader reads typed protocol messages. The returned slice holds the whole message (type byte,
// length, body) and is valid until the next call. A read cut short by a read deadline loses nothing:
// the next call goes on with the same message (the session's goroutine is woken that way while it
// waits for its client, e.g. when the server speaks during COPY FROM STDIN).
type msgReader struct {
	r    *bufio.Reader
	buf  []byte
	max  int
	want int // > 0: a message of want bytes is being read; buf holds its first bytes
}

func newMsgReader(r io.Reader, size, max int) *msgReader {
	return &msgReader{r: bufio.NewReaderSize(r, size), buf: make([]byte, 0, 8192), max: max}
}

// next reads one message.
func (m *msgReader) next() (typ byte, msg []byte, err error) {
	if m.want == 0 {
		hdr, err := m.r.Peek(5)
		if err != nil {
			if len(hdr) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		typ = hdr[0]
		n := int(int32(binary.BigEndian.Uint32(hdr[1:5])))
		if n < 4 {
			return 0, nil, fmt.Errorf("%w: type %q with length %d", errMalformed, typ, n)
		}
		if n > m.max {
			return 0, nil, fmt.Errorf("%w: type %q announces %d bytes, the limit is %d", ErrMessageTooLarge, typ, n, m.max)
		}
		m.want, m.buf = n+1, m.buf[:0]
	}
	if err := m.fill(); err != nil {
		return 0, nil, err
	}
	msg, m.want = m.buf, 0
	// Do not let one huge message pin a huge buffer for the connection's lifetime.
	if cap(m.buf) > 1<<20 {
		m.buf = make([]byte, 0, 8192)
	}
	return msg[0], msg, nil
}

// readChunk is the least a message buffer grows by. A buffer grows only when full, to at most twice
// what has been received: a peer that announces a large message and sends it slowly (or never) holds
// about what it sent, not the announced length.
const readChunk = 8 << 10

// fill reads the rest of the message of m.want bytes, growing the buffer as its bytes arrive. On a
// timeout what was read stays in the buffer for the next call.
func (m *msgReader) fill() error {
	for len(m.buf) < m.want {
		if len(m.buf) == cap(m.buf) {
			nb := make([]byte, len(m.buf), min(m.want, max(2*len(m.buf), readChunk)))
			copy(nb, m.buf)
			m.buf = nb
		}
		k, err := m.r.Read(m.buf[len(m.buf):min(m.want, cap(m.buf))])
		m.buf = m.buf[:len(m.buf)+k]
		if err != nil && len(m.buf) < m.want {
			return unexpectedEOF(err)
		}
	}
	return nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// buffered reports whether bytes are waiting in the read buffer.
func (m *msgReader) buffered() int { return m.r.Buffered() }

// cstring splits a NUL-terminated string off the front of b.
func cstring(b []byte) (string, []byte, error) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], nil
		}
	}
	return "", nil, fmt.Errorf("%w: unterminated string", errMalformed)
}

// appendMsgHeader starts a message of type typ in dst; finishMsg fills in its length.
func appendMsgHeader(dst []byte, typ byte) ([]byte, int) {
	start := len(dst)
	return append(dst, typ, 0, 0, 0, 0), start
}

func finishMsg(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// encodeParse builds a Parse message.
func encodeParse(dst []byte, name, query string, paramTypes []byte) []byte {
	dst, start := appendMsgHeader(dst, msgParse)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, query...)
	dst = append(dst, 0)
	dst = append(dst, paramTypes...)
	return finishMsg(dst, start)
}

// encodeSimple builds a message whose body is a NUL-terminated string (Query) or a name with a kind
// byte (Describe/Close).
func encodeQuery(dst []byte, sql string) []byte {
	dst, start := appendMsgHeader(dst, msgQuery)
	dst = append(dst, sql...)
	dst = append(dst, 0)
	return finishMsg(dst, start)
}

func encodeNamed(dst []byte, typ, kind byte, name string) []byte {
	dst, start := appendMsgHeader(dst, typ)
	dst = append(dst, kind)
	dst = append(dst, name...)
	dst = append(dst, 0)
	return finishMsg(dst, start)
}

// Fixed backend messages.
var (
	rawParseComplete = []byte{msgParseComplete, 0, 0, 0, 4}
	rawFlush         = []byte{msgFlush, 0, 0, 0, 4}
	rawSync          = []byte{msgSync, 0, 0, 0, 4}
	rawBindComplete  = []byte{msgBindComplete, 0, 0, 0, 4}
	rawCloseComplete = []byte{msgCloseComplete, 0, 0, 0, 4}
)

func appendReadyForQuery(dst []byte, status byte) []byte {
	return append(dst, msgReadyForQuery, 0, 0, 0, 5, status)
}

func appendCommandComplete(dst []byte, tag string) []byte {
	dst, start := appendMsgHeader(dst, msgCommandComplete)
	dst = append(dst, tag...)
	dst = append(dst, 0)
	return finishMsg(dst, start)
}

func appendMessage(dst []byte, m pgproto3.BackendMessage) []byte {
	out, err := m.Encode(dst)
	if err != nil {
		// Encoding fails only for values that do not fit the protocol's length fields, which the
		// proxy's own messages never have.
		panic(fmt.Sprintf("encode %T: %v", m, err))
	}
	return out
}

func appendParameterStatus(dst []byte, name, value string) []byte {
	dst, start := appendMsgHeader(dst, msgParamStatus)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	dst = append(dst, 0)
	return finishMsg(dst, start)
}
