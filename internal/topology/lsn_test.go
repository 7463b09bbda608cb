package topology

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseLSN(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want LSN
		err  bool
	}{
		{name: "zero", in: "0/0", want: 0},
		{name: "low half only", in: "0/16B3748", want: 0x16B3748},
		{name: "both halves", in: "16/B374D848", want: 0x16_B374D848},
		{name: "lower case", in: "16/b374d848", want: 0x16_B374D848},
		{name: "max", in: "FFFFFFFF/FFFFFFFF", want: ^LSN(0)},
		{name: "surrounding space", in: " 1/2\n", want: 0x1_00000002},
		{name: "empty", in: "", err: true},
		{name: "no slash", in: "16B374D848", err: true},
		{name: "empty high", in: "/1", err: true},
		{name: "empty low", in: "1/", err: true},
		{name: "not hex", in: "G/1", err: true},
		{name: "too long half", in: "100000000/0", err: true},
		{name: "sign", in: "-1/0", err: true},
		{name: "two slashes", in: "1/2/3", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLSN(tt.in)
			if tt.err {
				if !errors.Is(err, ErrInvalidLSN) {
					t.Fatalf("ParseLSN(%q) error = %v, want ErrInvalidLSN", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLSN(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseLSN(%q) = %#x, want %#x", tt.in, uint64(got), uint64(tt.want))
			}
			if back, _ := ParseLSN(got.String()); back != got {
				t.Fatalf("round trip of %s gave %s", got, back)
			}
		})
	}
}

func TestLSNString(t *testing.T) {
	for in, want := range map[LSN]string{0: "0/0", 0x16_B374D848: "16/B374D848", 0x1_0000000A: "1/A"} {
		if got := in.String(); got != want {
			t.Errorf("LSN(%#x).String() = %q, want %q", uint64(in), got, want)
		}
	}
}

func TestLSNArithmetic(t *testing.T) {
	a, b := MustParseLSN("1/0"), MustParseLSN("0/FFFFFF00")
	if got := a.Sub(b); got != 0x100 {
		t.Errorf("Sub = %d, want 256", got)
	}
	if got := b.Sub(a); got != -0x100 {
		t.Errorf("Sub = %d, want -256", got)
	}
	if a.Compare(b) != 1 || b.Compare(a) != -1 || a.Compare(a) != 0 {
		t.Errorf("Compare is not an order: %d %d %d", a.Compare(b), b.Compare(a), a.Compare(a))
	}
	if InvalidLSN.Valid() || !a.Valid() {
		t.Error("Valid: 0/0 must be invalid, 1/0 valid")
	}
}

func TestLSNJSON(t *testing.T) {
	in := struct{ L LSN }{MustParseLSN("2A/10")}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"L":"2A/10"}` {
		t.Fatalf("json = %s", b)
	}
	var out struct{ L LSN }
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("unmarshal = %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"L":"zz"}`), &out); !errors.Is(err, ErrInvalidLSN) {
		t.Fatalf("bad LSN in JSON: err = %v", err)
	}
}

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "1/", "/", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		back, err := ParseLSN(l.String())
		if err != nil || back != l {
			t.Fatalf("%q parsed to %s which does not round-trip: %v", s, l, err)
		}
	})
}
