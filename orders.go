package kwik

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
)

// Orders: raw data between servers that the client cannot read or forge. SendRawData's
// messages travel through the client, which reads them and may make up its own (with
// RawData.From set to any path ID it likes): a server must not act on them as orders. An
// order is sealed (AES-256-GCM) with a key derived from the join key and the session ID, over
// the sender's and the target's path IDs and a counter: only the servers holding the join key
// can make or read one, the receiver learns who truly sent it, and a replayed or redirected
// order does not open.
//
//	order = 0x01 || u8 len(from) || from || u64 counter || nonce (12) || AES-GCM(plaintext)
//	AAD   = "kwik-order-v1" || len+session ID || len+from || len+to || counter

// ErrOrderRejected is what OpenOrder returns for raw data that is not a genuine order for this
// server: forged, altered, meant for another path or session, or replayed.
var ErrOrderRejected = errors.New("kwik: not a genuine order from a server of this session")

const orderVersion = 1

type orderState struct {
	mu   sync.Mutex
	aead cipher.AEAD
	next uint64            // the counter of the next order sent
	last map[string]uint64 // by sender path ID: the last counter opened
}

// orders returns the session's order state, or nil without a join key.
func (s *session) orders() *orderState {
	s.orderOnce.Do(func() {
		if len(s.conf.JoinKey) == 0 || s.role == RoleClient {
			return
		}
		h := hmac.New(sha256.New, s.conf.JoinKey)
		h.Write([]byte("kwik-order-key-v1"))
		h.Write([]byte(s.id))
		block, err := aes.NewCipher(h.Sum(nil))
		if err != nil {
			return
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return
		}
		s.order = &orderState{aead: aead, next: 1, last: make(map[string]uint64)}
	})
	return s.order
}

func orderAAD(sessionID, from, to string, counter uint64) []byte {
	b := []byte("kwik-order-v1")
	for _, x := range []string{sessionID, from, to} {
		b = binary.BigEndian.AppendUint64(b, uint64(len(x)))
		b = append(b, x...)
	}
	return binary.BigEndian.AppendUint64(b, counter)
}

// SendOrder sends data to the server on pathID through the client, as SendRawData does, but
// sealed: the target reads it with OpenOrder, and the client can neither read, alter, forge nor
// replay it. Servers only, with a Config.JoinKey. Sealing adds 46 bytes and the sender's path
// ID to the message.
func SendOrder(sess Session, data []byte, pathID string) error {
	s, ok := sess.(*session)
	if !ok || s.role == RoleClient {
		return &detailError{msg: "kwik: SendOrder: a server's session only", is: ErrWrongRole}
	}
	o := s.orders()
	if o == nil {
		return &detailError{msg: "kwik: SendOrder needs Config.JoinKey", is: ErrNoJoinKey}
	}
	from := s.primary.id
	o.mu.Lock()
	counter := o.next
	o.next++
	o.mu.Unlock()
	msg := []byte{orderVersion, byte(len(from))}
	msg = append(msg, from...)
	msg = binary.BigEndian.AppendUint64(msg, counter)
	nonce := make([]byte, o.aead.NonceSize())
	_, _ = rand.Read(nonce)
	msg = append(msg, nonce...)
	msg = o.aead.Seal(msg, nonce, data, orderAAD(s.id, from, pathID, counter))
	return s.SendRawData(msg, pathID)
}

// OpenOrder opens raw data received with ReceiveRawData as an order: it returns the plaintext,
// with From set to the path ID of the server that sealed it (not what the client claimed), or
// ErrOrderRejected. Orders from one sender open in the order they were sent, each once.
func OpenOrder(sess Session, rd RawData) (RawData, error) {
	s, ok := sess.(*session)
	if !ok || s.role == RoleClient {
		return RawData{}, ErrOrderRejected
	}
	o := s.orders()
	if o == nil {
		return RawData{}, ErrOrderRejected
	}
	b := rd.Data
	if len(b) < 2 || b[0] != orderVersion {
		return RawData{}, ErrOrderRejected
	}
	n := int(b[1])
	ns := o.aead.NonceSize()
	if len(b) < 2+n+8+ns+o.aead.Overhead() {
		return RawData{}, ErrOrderRejected
	}
	from := string(b[2 : 2+n])
	counter := binary.BigEndian.Uint64(b[2+n:])
	nonce := b[2+n+8 : 2+n+8+ns]
	plain, err := o.aead.Open(nil, nonce, b[2+n+8+ns:], orderAAD(s.id, from, s.primary.id, counter))
	if err != nil {
		return RawData{}, ErrOrderRejected
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if counter <= o.last[from] {
		return RawData{}, ErrOrderRejected
	}
	if len(o.last) >= maxOrderSenders && o.last[from] == 0 {
		return RawData{}, ErrOrderRejected
	}
	o.last[from] = counter
	return RawData{Data: plain, From: from}, nil
}

// maxOrderSenders bounds the senders a session remembers counters for: the paths of a
// session, which the primary bounds.
const maxOrderSenders = 1024
