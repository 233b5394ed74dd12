package service

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

// FuzzBearerToken: any authorization header either yields a token no longer
// than the limit, taken from a "Bearer " header, or a refusal — never a panic.
func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer cmjt.abc")
	f.Add("bearer    eyJhbGciOi.x.y")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("")
	f.Fuzz(func(t *testing.T, header string) {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", header))
		tok, err := bearerToken(ctx)
		if err != nil {
			return
		}
		if len(tok) > MaxTokenBytes || !strings.HasPrefix(strings.ToLower(header), "bearer ") {
			t.Fatalf("accepted %q as token %q", header, tok)
		}
	})
}
