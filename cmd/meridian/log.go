package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
)

// newLogger builds the JSON logger every component of a command writes to w (stderr, or the lab's
// log file), at the level named by --log-level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return newJSONLogger(w, l), nil
}

// newJSONLogger writes one JSON object per line in which every key appears once and durations are
// strings ("19.36s", not 19360000000 nanoseconds).
func newJSONLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(&uniqueKeys{inner: slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: durationString})})
}

// durationString writes a time.Duration as its String(): nanoseconds are unreadable, and a number
// without a unit is ambiguous to whoever reads the log.
func durationString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// uniqueKeys is a slog.Handler that writes each key once per record. Loggers are built in layers (the
// lab's has component=lab and region, the proxy it starts adds component=proxy, the proxy's discovery
// component=discovery, and a record may name its region again): slog's own handlers would repeat
// every one, which JSON readers disagree on. Here an attribute replaces an earlier one of the same key,
// in its place, so the most specific value wins ("component":"discovery").
//
// Attributes added with With are kept here and handed to the inner handler with each record; WithGroup
// passes them on first, so keys are unique within each group.
type uniqueKeys struct {
	inner slog.Handler
	attrs []slog.Attr // added by With since the last WithGroup; never modified in place (shared by children)
}

func (h *uniqueKeys) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *uniqueKeys) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &uniqueKeys{inner: h.inner, attrs: mergeAttrs(slices.Clone(h.attrs), attrs)}
}

func (h *uniqueKeys) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &uniqueKeys{inner: h.inner.WithAttrs(h.attrs).WithGroup(name)}
}

func (h *uniqueKeys) Handle(ctx context.Context, r slog.Record) error {
	attrs := slices.Clone(h.attrs)
	added := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		added = append(added, a)
		return true
	})
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(mergeAttrs(attrs, added)...)
	return h.inner.Handle(ctx, out)
}

// mergeAttrs adds attrs to dst, replacing an attribute of dst with the same key. The attributes of a
// group with an empty key are inlined, as slog does.
func mergeAttrs(dst, attrs []slog.Attr) []slog.Attr {
	for _, a := range attrs {
		if a.Key == "" {
			if a.Value.Kind() == slog.KindGroup {
				dst = mergeAttrs(dst, a.Value.Group())
			}
			continue // slog drops an empty attribute
		}
		if i := slices.IndexFunc(dst, func(b slog.Attr) bool { return b.Key == a.Key }); i >= 0 {
			dst[i] = a
		} else {
			dst = append(dst, a)
		}
	}
	return dst
}
