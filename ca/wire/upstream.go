package wire

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/certmesh/certmesh/ca/wire/upstreampb"
)

// IntermediateRequest is a downstream server's request to its upstream:
// a DER CSR and the lifetime it asks for.
type IntermediateRequest struct {
	CSR []byte
	TTL time.Duration
}

// IntermediateResponse is the upstream's answer: the intermediate first,
// and the upstream's roots.
type IntermediateResponse struct {
	Chain []*x509.Certificate
	Roots []*x509.Certificate
}

// ErrBadIntermediateAnswer: the upstream's answer does not parse.
var ErrBadIntermediateAnswer = errors.New("wire: malformed upstream answer")

// UpstreamHandler serves one SignIntermediate call; its error is the
// gRPC status returned.
type UpstreamHandler func(context.Context, IntermediateRequest) (IntermediateResponse, error)

type upstreamServer struct {
	upstreampb.UnimplementedUpstreamServer
	handle UpstreamHandler
}

func (s upstreamServer) SignIntermediate(ctx context.Context, in *upstreampb.SignIntermediateRequest) (*upstreampb.SignIntermediateResponse, error) {
	resp, err := s.handle(ctx, IntermediateRequest{CSR: in.GetCsr(), TTL: time.Duration(in.GetTtlSeconds()) * time.Second})
	if err != nil {
		return nil, err
	}
	out := &upstreampb.SignIntermediateResponse{}
	for _, c := range resp.Chain {
		out.Chain = append(out.Chain, c.Raw)
	}
	for _, c := range resp.Roots {
		out.Roots = append(out.Roots, c.Raw)
	}
	return out, nil
}

// RegisterUpstream adds the upstream authority service to g.
func RegisterUpstream(g grpc.ServiceRegistrar, handle UpstreamHandler) {
	upstreampb.RegisterUpstreamServer(g, upstreamServer{handle: handle})
}

// SignIntermediate is the downstream side of the service.
func SignIntermediate(ctx context.Context, conn grpc.ClientConnInterface, req IntermediateRequest) (IntermediateResponse, error) {
	out, err := upstreampb.NewUpstreamClient(conn).SignIntermediate(ctx, &upstreampb.SignIntermediateRequest{
		Csr: req.CSR, TtlSeconds: int64(req.TTL / time.Second),
	})
	if err != nil {
		return IntermediateResponse{}, err
	}
	var resp IntermediateResponse
	if resp.Chain, err = parseDERs(out.GetChain()); err != nil {
		return IntermediateResponse{}, err
	}
	if resp.Roots, err = parseDERs(out.GetRoots()); err != nil {
		return IntermediateResponse{}, err
	}
	return resp, nil
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadIntermediateAnswer, err)
		}
		out = append(out, c)
	}
	return out, nil
}
