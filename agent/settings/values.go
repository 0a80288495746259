package settings

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Value is the field a setting fills.
type Value interface {
	// Set parses the text of a flag or a variable into the field.
	Set(text string) error
	// String is the field's value as a flag would give it.
	String() string
	// Target is the pointer a YAML value decodes into.
	Target() any
}

// Of binds a field of any type: parse reads a flag's or variable's text,
// format writes the value back (for the defaults shown in help and docs).
func Of[T any](p *T, parse func(string) (T, error), format func(T) string) Value {
	return &value[T]{p: p, parse: parse, format: format}
}

type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
}

func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func (v *value[T]) String() string { return v.format(*v.p) }
func (v *value[T]) Target() any    { return v.p }

// boolValue lets a flag be given without a value (--dns.spans).
type boolValue struct{ value[bool] }

func (*boolValue) IsBoolFlag() bool { return true }

// Bool binds a bool: true, false, 1, 0 and the other strconv.ParseBool forms.
func Bool(p *bool) Value {
	return &boolValue{value[bool]{p: p, parse: func(s string) (bool, error) {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, errors.New("want true or false")
		}
		return b, nil
	}, format: strconv.FormatBool}}
}

// String binds a string, taken as given.
func String(p *string) Value {
	return Of(p, func(s string) (string, error) { return s, nil }, func(s string) string { return s })
}

// Duration binds a time.Duration ("500ms", "5s", "2m").
func Duration(p *time.Duration) Value {
	return Of(p, func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errors.New("want a duration such as 500ms, 5s or 2m")
		}
		return d, nil
	}, FormatDuration)
}

// FormatDuration writes 5m rather than 5m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Uint32 binds a uint32 (bounds belong in the owner's Validate or Check).
func Uint32(p *uint32) Value {
	return Of(p, func(s string) (uint32, error) {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0, errors.New("want an integer from 0 to 4294967295")
		}
		return uint32(n), nil
	}, func(n uint32) string { return strconv.FormatUint(uint64(n), 10) })
}

// Int binds an int.
func Int(p *int) Value {
	return Of(p, func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, errors.New("want an integer")
		}
		return n, nil
	}, strconv.Itoa)
}

// List binds a comma-separated list of strings; blanks around items and
// empty items are dropped.
func List(p *[]string) Value {
	return Of(p, func(s string) ([]string, error) { return SplitList(s), nil },
		func(l []string) string { return strings.Join(l, ",") })
}

// Ports binds a comma-separated list of ports (1-65535).
func Ports(p *[]uint16) Value {
	return Of(p, func(s string) ([]uint16, error) {
		var out []uint16
		for _, item := range SplitList(s) {
			n, err := strconv.ParseUint(item, 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("%s is not a port from 1 to 65535", Quote(item))
			}
			out = append(out, uint16(n))
		}
		return out, nil
	}, func(l []uint16) string {
		return joinFormatted(l, func(n uint16) string { return strconv.Itoa(int(n)) })
	})
}

// Ints binds a comma-separated list of integers.
func Ints(p *[]int) Value {
	return Of(p, func(s string) ([]int, error) {
		var out []int
		for _, item := range SplitList(s) {
			n, err := strconv.Atoi(item)
			if err != nil {
				return nil, fmt.Errorf("%s is not an integer", Quote(item))
			}
			out = append(out, n)
		}
		return out, nil
	}, func(l []int) string { return joinFormatted(l, strconv.Itoa) })
}

// Floats binds a comma-separated list of numbers.
func Floats(p *[]float64) Value {
	return Of(p, func(s string) ([]float64, error) {
		var out []float64
		for _, item := range SplitList(s) {
			f, err := strconv.ParseFloat(item, 64)
			if err != nil {
				return nil, fmt.Errorf("%s is not a number", Quote(item))
			}
			out = append(out, f)
		}
		return out, nil
	}, func(l []float64) string {
		return joinFormatted(l, func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) })
	})
}

func joinFormatted[T any](l []T, f func(T) string) string {
	parts := make([]string, len(l))
	for i, x := range l {
		parts[i] = f(x)
	}
	return strings.Join(parts, ",")
}

// SplitList splits a comma-separated list, dropping blanks and empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Between is a Check that *p lies in [lo, hi].
func Between[T ~int | ~int64 | ~uint32 | ~uint64 | ~float64](p *T, lo, hi T) func() error {
	return func() error {
		if *p < lo || *p > hi {
			return fmt.Errorf("must be between %v and %v, got %v", lo, hi, *p)
		}
		return nil
	}
}
