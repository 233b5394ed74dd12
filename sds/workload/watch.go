package workload

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// builder builds the current message of a stream, or reports false while
// what the stream needs is not available yet (the caller's SVID before its
// first issue): the stream then waits instead of failing.
type builder[M proto.Message] func() (M, bool, error)

// deterministic makes equal messages marshal to equal bytes (map fields
// sorted), which is what lets watch skip a resend.
var deterministic = proto.MarshalOptions{Deterministic: true}

// watch is the loop of every streaming method: build the message, send it
// if its bytes differ from the last one sent, wait for the next change.
// It returns nil when the client goes away.
//
// Changed is read before building, so a change that lands while building
// fires the channel already held and is not missed.
func watch[M proto.Message](ctx context.Context, h *Handler, method string, build builder[M], send func(M) error) error {
	defer h.metrics.streamOpened(method)()
	var last []byte
	for {
		changed := h.src.Changed()
		sent, err := sendIfChanged(h, method, build, send, last)
		if err != nil {
			return err
		}
		if sent != nil {
			last = sent
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// sendIfChanged is one step of watch. It returns the bytes sent, or nil if
// nothing was sent.
func sendIfChanged[M proto.Message](h *Handler, method string, build builder[M], send func(M) error, last []byte) ([]byte, error) {
	msg, ok, err := build()
	if err != nil {
		return nil, h.internal(method, err)
	}
	if !ok {
		return nil, nil
	}
	b, err := deterministic.Marshal(msg)
	if err != nil {
		return nil, h.internal(method, fmt.Errorf("workload: marshal response: %w", err))
	}
	if bytes.Equal(b, last) {
		return nil, nil
	}
	if err := send(msg); err != nil {
		// The client is gone or the server stopping; gRPC drops this error.
		h.log.Debug("workload API stream ended", attrMethod, method, attrError, err.Error())
		return nil, err
	}
	h.metrics.updates.WithLabelValues(method).Inc()
	return b, nil
}
