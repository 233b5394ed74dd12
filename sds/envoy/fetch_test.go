package envoy

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

func TestFetchSecrets(t *testing.T) {
	e := newEnv(t, true)
	c := e.client(t)
	req := &discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{NameRootCA, NameDefault, NameDefault}}
	r1, err := c.FetchSecrets(context.Background(), req)
	require.NoError(t, err)
	got := secrets(t, r1)
	require.Len(t, got, 2)
	require.Equal(t, testID, svidOf(t, got[NameDefault]).ID.String())

	r2, err := c.FetchSecrets(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, r1.GetVersionInfo(), r2.GetVersionInfo(), "same content, same version")
	e.rotate(t)
	r3, err := c.FetchSecrets(context.Background(), req)
	require.NoError(t, err)
	require.NotEqual(t, r1.GetVersionInfo(), r3.GetVersionInfo())
}

func TestFetchSecretsWaitsForSVID(t *testing.T) {
	e := newEnv(t, false)
	c := e.client(t)
	type result struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.FetchSecrets(context.Background(), &discoveryv3.DiscoveryRequest{ResourceNames: []string{NameDefault}})
		done <- result{r, err}
	}()
	s := e.rotate(t)
	res := <-done
	require.NoError(t, res.err)
	require.Equal(t, s.Certificates[0].Raw, svidOf(t, secrets(t, res.r)[NameDefault]).Certificates[0].Raw)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{"shop"}})
	require.Equal(t, codes.DeadlineExceeded, status.Code(err))
}

func TestFetchSecretsRefusals(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		code  codes.Code
	}{
		{name: "unknown", names: []string{"nope"}, code: codes.InvalidArgument},
		{name: "other ID", names: []string{"spiffe://example.org/other"}, code: codes.PermissionDenied},
		{name: "too many", names: make([]string, 101), code: codes.InvalidArgument},
	}
	e := newEnv(t, true)
	c := e.client(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.FetchSecrets(context.Background(), &discoveryv3.DiscoveryRequest{ResourceNames: tt.names})
			require.Equal(t, tt.code, status.Code(err), "error: %v", err)
		})
	}
}

func TestDeltaSecretsUnimplemented(t *testing.T) {
	e := newEnv(t, true)
	st, err := e.client(t).DeltaSecrets(t.Context())
	require.NoError(t, err)
	_, err = st.Recv()
	require.Equal(t, codes.Unimplemented, status.Code(err))
}

// rawCodec sends bytes as they are, to put garbage on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

var _ encoding.Codec = rawCodec{}

// TestStreamGarbageBytes: bytes that are not a DiscoveryRequest end the
// stream with an error and leave the server serving.
func TestStreamGarbageBytes(t *testing.T) {
	e := newEnv(t, true)
	cc, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	require.NoError(t, err)
	defer cc.Close()
	desc := &grpc.StreamDesc{StreamName: "StreamSecrets", ServerStreams: true, ClientStreams: true}
	st, err := cc.NewStream(t.Context(), desc, "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets")
	require.NoError(t, err)
	require.NoError(t, st.SendMsg([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}))
	var out []byte
	err = st.RecvMsg(&out)
	require.Error(t, err)
	require.NotEqual(t, codes.OK, status.Code(err))

	v := e.envoy(t)
	v.send([]string{NameDefault}, nil, "")
	v.mustRecv()
}
