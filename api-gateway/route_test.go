package gateway

import (
	"strings"
	"testing"
)

// FuzzRewriteCookiePath holds the cookie rewrite to its promise: the
// cookie's own bytes are kept, and its path ends up inside the session.
func FuzzRewriteCookiePath(f *testing.F) {
	for _, c := range []string{"a=1", "a=1; Path=/", "a={\"x\":1}; path=/api; HttpOnly", "a=1; Path=", "a=1;;Path=/p/x/y", "a=b; Domain=x"} {
		f.Add(c)
	}
	const prefix = "/p/" + fpSession
	f.Fuzz(func(t *testing.T, c string) {
		out := rewriteCookiePath(c, prefix)
		first, _, _ := strings.Cut(c, ";")
		if !strings.HasPrefix(out, first) {
			t.Fatalf("rewriteCookiePath(%q) = %q lost the cookie itself", c, out)
		}
		var path string
		found := false
		for _, attr := range strings.Split(out, ";")[1:] {
			name, value, _ := strings.Cut(strings.TrimSpace(attr), "=")
			if strings.EqualFold(strings.TrimSpace(name), "path") {
				path, found = strings.TrimSpace(value), true
				break
			}
		}
		if !found || !underPrefix(path, prefix) {
			t.Fatalf("rewriteCookiePath(%q) = %q: path %q is outside %s", c, out, path, prefix)
		}
	})
}

// FuzzRewriteLocation: a rewritten Location always stays in the session,
// and one on another site is never touched.
func FuzzRewriteLocation(f *testing.F) {
	for _, l := range []string{"/tree", "//evil.com/x", "http://127.0.0.1:9/x?y#z", "https://example.com/", "tree", "/p/" + fpSession + "/x"} {
		f.Add(l)
	}
	const prefix = "/p/" + fpSession
	f.Fuzz(func(t *testing.T, loc string) {
		out, ok := rewriteLocation(loc, prefix, "127.0.0.1:9", "gw.test")
		if !ok {
			return
		}
		if !strings.HasPrefix(out, prefix+"/") {
			t.Fatalf("rewriteLocation(%q) = %q leaves the session", loc, out)
		}
	})
}
