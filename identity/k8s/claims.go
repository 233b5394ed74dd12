package k8s

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// claims are the parts of a ServiceAccount JWT read before the TokenReview.
// They are NOT verified here: they only classify a refusal (expired, wrong
// audience, which pod) and spare the apiserver obviously bad tokens. Only
// the TokenReview's answer grants an identity.
type claims struct {
	Subject  string   `json:"sub"`
	Audience audience `json:"aud"`
	Expiry   int64    `json:"exp"`
	K8s      struct {
		Namespace string `json:"namespace"`
		Pod       *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// audience accepts both JWT forms: a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	if string(b) == "null" { // no audience, not one empty audience
		*a = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

var errNotJWT = errors.New("not a ServiceAccount JWT")

func parseClaims(token string) (claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims{}, errNotJWT
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return claims{}, fmt.Errorf("%w: %v", errNotJWT, err)
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return claims{}, fmt.Errorf("%w: %v", errNotJWT, err)
	}
	if !strings.HasPrefix(c.Subject, saUserPrefix) {
		return claims{}, fmt.Errorf("%w: subject %q", errNotJWT, c.Subject)
	}
	return c, nil
}

// precheck refuses, without asking the apiserver, a token that has expired
// or was issued for another audience. Legacy Secret-based tokens carry
// neither exp nor aud and are refused as the wrong audience.
func (c claims) precheck(now time.Time, want string) error {
	if c.Expiry != 0 && !now.Before(c.expiry()) {
		return fmt.Errorf("%w: at %s", ErrExpired, c.expiry().UTC().Format(time.RFC3339))
	}
	if !slices.Contains(c.Audience, want) {
		return fmt.Errorf("%w: token is for %v", ErrWrongAudience, []string(c.Audience))
	}
	return nil
}

func (c claims) expiry() time.Time {
	if c.Expiry == 0 {
		return time.Time{}
	}
	return time.Unix(c.Expiry, 0)
}
