package kwik

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kwik-go/kwik/internal/wire/pb"
)

// Raw data is the seed's general relay: a server hands bytes to the client over its control
// stream, the client forwards them on the control stream of the target path, and the target
// server reads them with ReceiveRawData. The client answers the source with a
// RAW_PACKET_RESULT, so SendRawData reports an unknown or dead target.

// rawEntryCost is what one queued message costs beyond its bytes.
const rawEntryCost = 64

// rawOverhead is room left in a message for the RawPacketTransmission around the data.
const rawOverhead = 256

// errClientReceivesNoRaw: raw data targets servers' paths only.
var errClientReceivesNoRaw = &detailError{msg: "kwik: the client receives no raw data (it relays it)", is: ErrWrongRole}

type rawState struct {
	mu      sync.Mutex
	queue   []RawData // servers: relayed data waiting for ReceiveRawData
	bytes   int
	dropped uint64 // relayed messages dropped because the queue was full
	signal  chan struct{}
	nextID  uint64
	waiters map[uint64]chan error // servers: SendRawData calls waiting for the client's result
}

func (r *rawState) init() {
	r.signal = make(chan struct{}, 1)
	r.waiters = make(map[uint64]chan error)
}

func maxRawData(maxMessageSize int) int { return maxMessageSize - rawOverhead }

// SendRawData relays data through the client to the server on pathID. On a server it returns
// once the client has forwarded it (nil) or refused it (KWIK_PATH_NOT_FOUND, KWIK_PATH_DEAD,
// KWIK_PACKET_TOO_LARGE). On the client it sends data to that server directly.
func (s *session) SendRawData(data []byte, pathID string) error {
	if s.role == RoleClient {
		p, err := s.livePath(pathID)
		if err != nil {
			return err
		}
		if len(data) > maxRawData(p.peer.maxMessageSize) {
			return &Error{Code: CodePacketTooLarge, Message: "raw data larger than the path accepts"}
		}
		if !p.ctrl.queueRaw(&pb.RawPacketTransmission{Data: bytes.Clone(data), TargetPathId: pathID}, s.conf.MaxPendingRawData) {
			return &Error{Code: CodeInternal, Message: "relay queue full"}
		}
		return nil
	}
	if err := s.ctx.Err(); err != nil {
		return s.closeErr()
	}
	if len(data) > maxRawData(s.primary.peer.maxMessageSize) {
		return &Error{Code: CodePacketTooLarge, Message: "raw data larger than the client accepts"}
	}
	if s.role == RolePrimary {
		if err := s.pathError(pathID); err != nil {
			return err
		}
	}
	ch := make(chan error, 1)
	s.raw.mu.Lock()
	id := s.raw.nextID
	s.raw.nextID++
	s.raw.waiters[id] = ch
	s.raw.mu.Unlock()
	defer func() {
		s.raw.mu.Lock()
		delete(s.raw.waiters, id)
		s.raw.mu.Unlock()
	}()
	if !s.primary.ctrl.queueRaw(&pb.RawPacketTransmission{Data: bytes.Clone(data), TargetPathId: pathID, Id: id}, s.conf.MaxPendingRawData) {
		return &Error{Code: CodeInternal, Message: "raw data queue full"}
	}
	timer := time.NewTimer(s.conf.answerTimeout())
	defer timer.Stop()
	select {
	case err := <-ch:
		return err
	case <-timer.C:
		return &Error{Code: CodePathDead, Message: "the client did not confirm the relay"}
	case <-s.ctx.Done():
		return s.closeErr()
	}
}

// ReceiveRawData returns the next message relayed to this server.
func (s *session) ReceiveRawData(ctx context.Context) (RawData, error) {
	if s.role == RoleClient {
		return RawData{}, errClientReceivesNoRaw
	}
	for {
		s.raw.mu.Lock()
		if len(s.raw.queue) > 0 {
			d := s.raw.queue[0]
			s.raw.queue[0] = RawData{}
			s.raw.queue = s.raw.queue[1:]
			s.raw.bytes -= len(d.Data) + rawEntryCost
			if len(s.raw.queue) > 0 {
				notify(s.raw.signal)
			}
			s.raw.mu.Unlock()
			return d, nil
		}
		s.raw.mu.Unlock()
		select {
		case <-s.raw.signal:
		case <-ctx.Done():
			return RawData{}, ctx.Err()
		case <-s.ctx.Done():
			return RawData{}, s.closeErr()
		}
	}
}

// receiveRaw (servers) is a RawPacketTransmission delivered by the client: it waits for
// ReceiveRawData, within Config.MaxPendingRawData.
func (s *session) receiveRaw(m *pb.RawPacketTransmission) {
	s.raw.mu.Lock()
	// Every message is charged its overhead too, so that empty ones cannot pile up.
	if cost := len(m.Data) + rawEntryCost; s.raw.bytes+cost > s.conf.MaxPendingRawData {
		s.raw.dropped++
	} else {
		s.raw.queue = append(s.raw.queue, RawData{Data: m.Data, From: m.SourceServerId})
		s.raw.bytes += cost
	}
	s.raw.mu.Unlock()
	notify(s.raw.signal)
}

// relayRaw (client) is a server's RawPacketTransmission arriving on path p: it is relayed to
// its target path, and the server hears the outcome (RawPacketResult).
func (s *session) relayRaw(p *path, m *pb.RawPacketTransmission) error {
	res := &pb.RawPacketResult{Id: m.Id}
	target, err := s.livePath(m.TargetPathId)
	switch {
	case err != nil:
		var ke *Error
		errors.As(err, &ke)
		res.ErrorCode, res.ErrorMessage = pb.ErrorCode(ke.Code), ke.Message
	case len(m.Data) > maxRawData(target.peer.maxMessageSize):
		res.ErrorCode, res.ErrorMessage = pb.ErrorCode(CodePacketTooLarge), "raw data larger than the target accepts"
	case !target.ctrl.queueRaw(&pb.RawPacketTransmission{Data: m.Data, TargetPathId: m.TargetPathId, SourceServerId: p.id}, s.conf.MaxPendingRawData):
		res.ErrorCode, res.ErrorMessage = pb.ErrorCode(CodeInternal), "relay queue full"
	}
	p.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketResult{RawPacketResult: res}})
	return nil
}

// handleRawResult (servers) delivers the client's verdict to the waiting SendRawData.
func (s *session) handleRawResult(r *pb.RawPacketResult) error {
	ch := take(&s.raw.mu, s.raw.waiters, r.Id)
	if ch == nil {
		return nil
	}
	var err error
	if r.ErrorCode != pb.ErrorCode_NO_ERROR {
		err = &Error{Code: ErrorCode(r.ErrorCode), Message: r.ErrorMessage, Remote: true}
	}
	ch <- err
	return nil
}
