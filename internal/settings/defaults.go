// Package settings reads the default tags of Spawner's settings structs,
// so that code building a Config by hand (tests, benchmarks) starts from
// the same defaults as the environment gives, and the tags stay the only
// place a default is written.
package settings

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Defaults returns a T whose fields hold their `default` tags, as
// envconfig fills them from an empty environment. Fields without a tag
// keep their zero value; embedded and nested structs are filled too. It
// panics on a tag its field's type cannot hold, which is a mistake in the
// program, not in any input.
func Defaults[T any]() T {
	var v T
	if err := fill(reflect.ValueOf(&v).Elem()); err != nil {
		panic(fmt.Sprintf("settings: %T: %v", v, err))
	}
	return v
}

func fill(v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() || f.Tag.Get("ignored") == "true" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
			if err := fill(fv); err != nil {
				return err
			}
			continue
		}
		def, ok := f.Tag.Lookup("default")
		if !ok {
			continue
		}
		if err := set(fv, def); err != nil {
			return fmt.Errorf("field %s: default %q: %w", f.Name, def, err)
		}
	}
	return nil
}

// set parses s into v as envconfig does for the kinds settings use.
func set(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeFor[time.Duration]() {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 0, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 0, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetFloat(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported slice type %s", v.Type())
		}
		var parts []string
		if s != "" {
			parts = strings.Split(s, ",")
		}
		v.Set(reflect.ValueOf(parts).Convert(v.Type()))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// Overlay returns Defaults[T]() with every field that is not zero in over
// laid on it: a Config written by hand with only the settings a test is
// about, the rest as the tags say. A field cannot be set to its zero value
// this way; build on Defaults for that.
func Overlay[T any](over T) T {
	v := Defaults[T]()
	overlay(reflect.ValueOf(&v).Elem(), reflect.ValueOf(over))
	return v
}

func overlay(dst, src reflect.Value) {
	t := dst.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		d, s := dst.Field(i), src.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
			overlay(d, s)
			continue
		}
		if !s.IsZero() {
			d.Set(s)
		}
	}
}
