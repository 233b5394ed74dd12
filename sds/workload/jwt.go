package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// maxAudiences matches the CA's limit, so a request the CA would refuse is
// refused here as InvalidArgument rather than surfacing as Unavailable.
const maxAudiences = 16

// FetchJWTSVID returns a JWT-SVID for the caller. A requested spiffe_id must
// be the caller's own: a workload has exactly one identity here.
func (h *Handler) FetchJWTSVID(ctx context.Context, req *workloadpb.JWTSVIDRequest) (*workloadpb.JWTSVIDResponse, error) {
	id, err := h.authorize(ctx, methodJWTSVID)
	if err != nil {
		return nil, err
	}
	if !validAudience(req.GetAudience()) {
		return nil, h.refuse(methodJWTSVID, fmt.Errorf("%w: got %d", errBadAudience, len(req.GetAudience())))
	}
	if s := req.GetSpiffeId(); s != "" {
		want, err := spiffeid.FromString(s)
		if err != nil {
			return nil, h.refuse(methodJWTSVID, fmt.Errorf("%w: %w", errBadSPIFFEID, err))
		}
		if want != id.ID {
			return nil, h.refuse(methodJWTSVID, fmt.Errorf("%w: %s asked for %s", errNotCallerID, id.ID, want))
		}
	}
	svid, err := h.src.FetchJWTSVID(ctx, id.ID, req.GetAudience())
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, h.refuse(methodJWTSVID, fmt.Errorf("%w: %s: %w", errJWTUnavailable, id.ID, err))
	}
	if svid.ID != id.ID {
		return nil, h.internal(methodJWTSVID, fmt.Errorf("workload: source returned JWT-SVID for %s to %s", svid.ID, id.ID))
	}
	return &workloadpb.JWTSVIDResponse{Svids: []*workloadpb.JWTSVID{{
		SpiffeId: id.ID.String(),
		Svid:     svid.Marshal(),
	}}}, nil
}

func validAudience(aud []string) bool {
	return len(aud) > 0 && len(aud) <= maxAudiences && !slices.Contains(aud, "")
}

// FetchJWTBundles streams the JWT bundle as a JWKS keyed by trust domain ID,
// and a new message whenever it changes.
func (h *Handler) FetchJWTBundles(_ *workloadpb.JWTBundlesRequest, stream grpc.ServerStreamingServer[workloadpb.JWTBundlesResponse]) error {
	ctx := stream.Context()
	if _, err := h.authorize(ctx, methodJWTBundles); err != nil {
		return err
	}
	return watch(ctx, h, methodJWTBundles, h.jwtBundlesResponse, stream.Send)
}

func (h *Handler) jwtBundlesResponse() (*workloadpb.JWTBundlesResponse, bool, error) {
	b := h.src.JWTBundle()
	if b == nil {
		return nil, false, nil
	}
	jwks, err := marshalJWKS(b)
	if err != nil {
		return nil, false, err
	}
	return &workloadpb.JWTBundlesResponse{
		Bundles: map[string][]byte{h.src.TrustDomain().IDString(): jwks},
	}, true, nil
}

// marshalJWKS is jwtbundle.Bundle.Marshal with the keys sorted by key ID:
// Marshal ranges over a map, so a bundle with two keys would marshal
// differently each time and defeat watch's skip of identical messages.
func marshalJWKS(b *jwtbundle.Bundle) ([]byte, error) {
	auths := b.JWTAuthorities()
	kids := make([]string, 0, len(auths))
	for kid := range auths {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	jwks := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(kids))}
	for _, kid := range kids {
		jwks.Keys = append(jwks.Keys, jose.JSONWebKey{Key: auths[kid], KeyID: kid})
	}
	out, err := json.Marshal(jwks)
	if err != nil {
		return nil, fmt.Errorf("workload: marshal JWT bundle: %w", err)
	}
	return out, nil
}

// ValidateJWTSVID checks a JWT-SVID's signature against the JWT bundle, its
// audience, and its expiry, and returns its subject and claims. The token
// itself is never logged: it is a credential.
func (h *Handler) ValidateJWTSVID(ctx context.Context, req *workloadpb.ValidateJWTSVIDRequest) (*workloadpb.ValidateJWTSVIDResponse, error) {
	if _, err := h.authorize(ctx, methodValidateJWT); err != nil {
		return nil, err
	}
	if req.GetAudience() == "" || req.GetSvid() == "" {
		return nil, h.refuse(methodValidateJWT, errMissingValidate)
	}
	bundle := h.src.JWTBundle()
	if bundle == nil {
		return nil, h.refuse(methodValidateJWT, errNoJWTBundle)
	}
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), bundle, []string{req.GetAudience()})
	if err != nil {
		return nil, h.refuse(methodValidateJWT, fmt.Errorf("%w: %w", errInvalidJWT, err))
	}
	// ParseAndValidate checked expiry against the wall clock; check it
	// against ours too, so that tests and a skewed host agree with the CA.
	if now := h.clock.Now(); !now.Before(svid.Expiry) {
		return nil, h.refuse(methodValidateJWT, fmt.Errorf("%w: %s at %s", errJWTExpired, svid.Expiry, now))
	}
	claims, err := claimsStruct(svid.Claims)
	if err != nil {
		return nil, h.internal(methodValidateJWT, err)
	}
	return &workloadpb.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// claimsStruct converts JWT claims through JSON, which handles every value
// a JWT decoder can produce (json.Number included) where structpb.NewStruct
// accepts only a fixed set of Go types.
func claimsStruct(claims map[string]any) (*structpb.Struct, error) {
	raw, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("workload: marshal claims: %w", err)
	}
	s := new(structpb.Struct)
	if err := protojson.Unmarshal(raw, s); err != nil {
		return nil, fmt.Errorf("workload: claims to struct: %w", err)
	}
	return s, nil
}
