// Package sessiontoken derives and checks per-session access tokens. A
// token is an HMAC of the session id under the installation's secret, so
// no token is stored anywhere, every gateway replica can check it, and a
// get-or-create by key hands out the same token again.
package sessiontoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MinSecretBytes is the shortest secret accepted.
const MinSecretBytes = 32

// Signer makes and checks tokens for one installation.
type Signer struct {
	secret []byte
}

// New returns a Signer for secret, which must hold at least MinSecretBytes.
func New(secret []byte) (*Signer, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("session secret: want at least %d bytes, got %d", MinSecretBytes, len(secret))
	}
	return &Signer{secret: append([]byte(nil), secret...)}, nil
}

// Token returns the access token of one session.
func (s *Signer) Token(sessionID string) string {
	mac := hmac.New(sha256.New, s.secret)
	mac.Write([]byte("spawner-session:"))
	mac.Write([]byte(sessionID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// Valid reports, in constant time, whether token opens sessionID.
func (s *Signer) Valid(sessionID, token string) bool {
	if token == "" {
		return false
	}
	return hmac.Equal([]byte(token), []byte(s.Token(sessionID)))
}

// LoadSecret returns the secret given in hex, or else the one kept in dir,
// creating it there on first use so that tokens survive a restart.
func LoadSecret(hexSecret, dir string) ([]byte, error) {
	if hexSecret != "" {
		b, err := hex.DecodeString(strings.TrimSpace(hexSecret))
		if err != nil {
			return nil, errors.New("session secret: not hex")
		}
		return b, nil
	}
	if dir == "" {
		return nil, errors.New("session secret: none given and no data dir to keep one")
	}
	path := filepath.Join(dir, "session-secret")
	if b, err := os.ReadFile(path); err == nil {
		// A secret that others could read opens every session: close it,
		// and its directory, whoever made them so.
		if err := restrict(dir, 0o700); err != nil {
			return nil, err
		}
		if err := restrict(path, 0o600); err != nil {
			return nil, err
		}
		return hex.DecodeString(strings.TrimSpace(string(b)))
	}
	secret := make([]byte, MinSecretBytes)
	_, _ = rand.Read(secret)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("session secret: %w", err)
	}
	if err := restrict(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		return nil, fmt.Errorf("session secret: %w", err)
	}
	return secret, nil
}

// restrict takes from path every permission that mode does not grant.
func restrict(path string, mode os.FileMode) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("session secret: %w", err)
	}
	if info.Mode().Perm()&^mode != 0 {
		if err := os.Chmod(path, info.Mode().Perm()&mode); err != nil {
			return fmt.Errorf("session secret: %w", err)
		}
	}
	return nil
}
