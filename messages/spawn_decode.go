package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The spawn request is read token by token rather than with json.Unmarshal,
// because encoding/json accepts what a contract should not: field names in
// any case ({"Key":..}, "ENV"), the last of duplicate keys, null for any
// field, and invalid UTF-8 or lone surrogate escapes, which it replaces with
// U+FFFD so that different keys collide.

// spawnFields names the fields of SpawnRequest exactly as they are spelled.
var spawnFields = []string{"app", "request_id", "key", "env", "labels", "idle_timeout_seconds", "max_lifetime_seconds", "pool", "placement"}

// DecodeSpawnRequest parses and validates a spawn request. An empty body is a
// request with every field unset. Unknown, misspelt or repeated fields, null
// values, trailing data, text that is not UTF-8 and invalid values are errors
// with CodeBadRequest that say where the problem is; a body over
// MaxRequestBytes is CodeTooLarge.
func DecodeSpawnRequest(body []byte) (SpawnRequest, error) {
	if len(body) > MaxRequestBytes {
		return SpawnRequest{}, Errorf(CodeTooLarge, "request body is over %d bytes", MaxRequestBytes)
	}
	// Only JSON's own whitespace: bytes.TrimSpace would also take U+0085.
	if len(bytes.Trim(body, " \t\r\n")) == 0 {
		return SpawnRequest{}, nil
	}
	if !utf8.Valid(body) {
		return SpawnRequest{}, Errorf(CodeBadRequest, "malformed JSON at byte %d: the body is not valid UTF-8", invalidUTF8At(body))
	}
	req, err := parseSpawnRequest(body)
	if err != nil {
		return SpawnRequest{}, err
	}
	if off, ok := loneSurrogate(body); ok {
		return SpawnRequest{}, Errorf(CodeBadRequest, "malformed JSON at byte %d: a \\u escape is half of a UTF-16 surrogate pair", off)
	}
	if err := req.Validate(); err != nil {
		return SpawnRequest{}, err
	}
	return req, nil
}

// DescribeJSONError turns an error of json.Unmarshal into a sentence that
// says what was wrong and at which byte of body (counted from 0), with the
// text before it for context.
func DescribeJSONError(err error, body []byte) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.As(err, &syn) && syn.Offset >= int64(len(body)) && strings.Contains(syn.Error(), "end of JSON input"):
		return fmt.Sprintf("malformed JSON: the body ends at byte %d before the JSON value is complete", len(body))
	case syn != nil:
		// Offset counts the bytes read, the bad one included.
		at := max(syn.Offset-1, 0)
		return fmt.Sprintf("malformed JSON at byte %d%s: %s", at, near(body, at), syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "the body"
		}
		return fmt.Sprintf("malformed JSON at byte %d: %s must be %s, not a JSON %s", typ.Offset, field, goTypeName(typ.Type.Kind().String()), typ.Value)
	default:
		return "malformed JSON: " + err.Error()
	}
}

// near quotes the bytes up to and including the one at offset, to show
// where a syntax error is.
func near(body []byte, at int64) string {
	if at >= int64(len(body)) {
		return ""
	}
	start := max(at-16, 0)
	return fmt.Sprintf(" (%q)", body[start:at+1])
}

func goTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	case "bool":
		return "true or false"
	default:
		return "a number"
	}
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

type spawnParser struct {
	dec  *json.Decoder
	body []byte
}

func parseSpawnRequest(body []byte) (SpawnRequest, error) {
	var req SpawnRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	p := spawnParser{dec: dec, body: body}
	if err := p.open("the request"); err != nil {
		return req, err
	}
	seen := map[string]bool{}
	for dec.More() {
		at := dec.InputOffset()
		name, err := p.name()
		if err != nil {
			return req, err
		}
		if seen[name] {
			return req, Errorf(CodeBadRequest, "malformed JSON at byte %d: field %q appears twice", at, name)
		}
		seen[name] = true
		switch name {
		case "app":
			req.App, err = p.str(name)
		case "request_id":
			req.RequestID, err = p.str(name)
		case "key":
			req.Key, err = p.str(name)
		case "env":
			req.Env, err = p.strMap(name)
		case "labels":
			req.Labels, err = p.strMap(name)
		case "idle_timeout_seconds":
			req.IdleTimeoutSeconds, err = p.seconds(name)
		case "max_lifetime_seconds":
			req.MaxLifetimeSeconds, err = p.seconds(name)
		case "pool":
			req.Pool, err = p.str(name)
		case "placement":
			req.Placement, err = p.strMap(name)
		default:
			err = unknownField(at, name)
		}
		if err != nil {
			return req, err
		}
	}
	if err := p.close(); err != nil {
		return req, err
	}
	at := dec.InputOffset()
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, Errorf(CodeBadRequest, "malformed JSON at byte %d: data after the request object", at)
	}
	return req, nil
}

func unknownField(at int64, name string) error {
	for _, f := range spawnFields {
		if strings.EqualFold(f, name) {
			return Errorf(CodeBadRequest, "malformed JSON at byte %d: unknown field %q; field names are lower case: %q", at, name, f)
		}
	}
	return Errorf(CodeBadRequest, "malformed JSON at byte %d: unknown field %q; the fields are %s", at, name, strings.Join(spawnFields, ", "))
}

// token reads one token, turning a syntax error into a message with its offset.
func (p *spawnParser) token() (json.Token, int64, error) {
	at := p.dec.InputOffset()
	tok, err := p.dec.Token()
	if err != nil {
		// A Decoder's offsets are those of its buffer, not of the bad byte;
		// Unmarshal finds the same first error and says where it is.
		var v any
		if uerr := json.Unmarshal(p.body, &v); uerr != nil {
			err = uerr
		}
		return nil, at, Errorf(CodeBadRequest, "%s", DescribeJSONError(err, p.body))
	}
	return tok, at, nil
}

func (p *spawnParser) open(what string) error {
	tok, at, err := p.token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return Errorf(CodeBadRequest, "malformed JSON at byte %d: %s must be an object, not %s", at, what, kind(tok))
	}
	return nil
}

func (p *spawnParser) close() error {
	tok, at, err := p.token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '}' {
		return Errorf(CodeBadRequest, "malformed JSON at byte %d: want the end of the object, got %s", at, kind(tok))
	}
	return nil
}

func (p *spawnParser) name() (string, error) {
	tok, at, err := p.token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", Errorf(CodeBadRequest, "malformed JSON at byte %d: want a field name, got %s", at, kind(tok))
	}
	return s, nil
}

func (p *spawnParser) str(field string) (string, error) {
	tok, at, err := p.token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", typeError(at, field, "a string", tok)
	}
	return s, nil
}

func (p *spawnParser) seconds(field string) (int64, error) {
	tok, at, err := p.token()
	if err != nil {
		return 0, err
	}
	num, ok := tok.(json.Number)
	if !ok {
		return 0, typeError(at, field, "a whole number of seconds", tok)
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return 0, Errorf(CodeBadRequest, "malformed JSON at byte %d: %s must be a whole number of seconds from 0 to %d, not %s", at, field, MaxTimeoutSeconds, num)
	}
	return n, nil
}

func (p *spawnParser) strMap(field string) (map[string]string, error) {
	tok, at, err := p.token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, typeError(at, field, "an object of strings", tok)
	}
	m := map[string]string{}
	for p.dec.More() {
		at := p.dec.InputOffset()
		name, err := p.name()
		if err != nil {
			return nil, err
		}
		if _, dup := m[name]; dup {
			return nil, Errorf(CodeBadRequest, "malformed JSON at byte %d: %s: %q appears twice", at, field, name)
		}
		if len(m) == MaxMapEntries {
			return nil, Errorf(CodeBadRequest, "%s: at most %d entries", field, MaxMapEntries)
		}
		if m[name], err = p.str(field + "." + name); err != nil {
			return nil, err
		}
	}
	if err := p.close(); err != nil {
		return nil, err
	}
	return m, nil
}

func typeError(at int64, field, want string, got json.Token) error {
	if got == nil {
		return Errorf(CodeBadRequest, "malformed JSON at byte %d: %s is null; leave the field out instead", at, field)
	}
	return Errorf(CodeBadRequest, "malformed JSON at byte %d: %s must be %s, not %s", at, field, want, kind(got))
}

// kind names a token's JSON type for an error message.
func kind(tok json.Token) string {
	switch t := tok.(type) {
	case nil:
		return "null"
	case bool:
		return "true or false"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		if t == '{' {
			return "an object"
		}
		return fmt.Sprintf("%q", rune(t))
	default:
		return fmt.Sprintf("%T", tok)
	}
}

// loneSurrogate finds a \u escape in a string of a syntactically valid JSON
// body that encodes half of a UTF-16 surrogate pair, which encoding/json
// would turn into U+FFFD.
func loneSurrogate(body []byte) (int, bool) {
	inString := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			if i+1 < len(body) && body[i+1] == 'u' {
				r, ok := hex4(body, i+2)
				switch {
				case !ok:
				case r >= 0xD800 && r <= 0xDBFF:
					lo, ok := rune(0), false
					if i+7 < len(body) && body[i+6] == '\\' && body[i+7] == 'u' {
						lo, ok = hex4(body, i+8)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return i, true
					}
					i += 11
					continue
				case r >= 0xDC00 && r <= 0xDFFF:
					return i, true
				}
			}
			i++ // Skip the escaped character.
		}
	}
	return 0, false
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[at:at+4]), 16, 32)
	return rune(n), err == nil
}
