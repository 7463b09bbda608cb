package topology

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL write-ahead log position: a byte offset into the WAL stream. PostgreSQL prints it
// as two hexadecimal 32-bit halves separated by a slash ("16/B374D848"), the format of the pg_lsn type.
// The zero value is the invalid position 0/0, which PostgreSQL uses for "none".
type LSN uint64

// InvalidLSN is the position PostgreSQL reports as 0/0 (InvalidXLogRecPtr in access/xlogdefs.h).
const InvalidLSN LSN = 0

// ErrInvalidLSN is wrapped by [ParseLSN] errors.
var ErrInvalidLSN = errors.New("invalid LSN")

// ParseLSN parses the "X/Y" text form of a pg_lsn, as printed by pg_current_wal_lsn().
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("%w %q: want two hexadecimal halves of up to 8 digits, like 16/B374D848", ErrInvalidLSN, s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %w", ErrInvalidLSN, s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %w", ErrInvalidLSN, s, err)
	}
	return LSN(h<<32 | l), nil
}

// MustParseLSN is ParseLSN for constants in tests and tables; it panics on bad input.
func MustParseLSN(s string) LSN {
	l, err := ParseLSN(s)
	if err != nil {
		panic(err)
	}
	return l
}

// String prints the position the way PostgreSQL does: upper-case hexadecimal halves without padding.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// Valid reports whether l is a real position (not 0/0).
func (l LSN) Valid() bool { return l != InvalidLSN }

// Sub returns the number of WAL bytes from o to l; it is negative when l is behind o.
func (l LSN) Sub(o LSN) int64 { return int64(l - o) }

// Compare returns -1, 0 or +1 as l is before, at or after o; it fits slices.SortFunc.
func (l LSN) Compare(o LSN) int {
	switch {
	case l < o:
		return -1
	case l > o:
		return 1
	}
	return 0
}

// MarshalText implements encoding.TextMarshaler, so LSNs are "X/Y" strings in JSON and YAML.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
