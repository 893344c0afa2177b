package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
)

// spec says how to generate an object: every server that knows it makes the same bytes, so
// the example needs no files. A real deployment would name a file and its version instead.
type spec struct {
	Size int64
	Seed uint64
}

// maxObjectSize bounds what a secondary agrees to generate for a prepare message; maxObjects
// and maxStoreBytes bound what one server's store holds in all (prepare orders come only from
// the primary, sealed, but a bound costs nothing).
const (
	maxObjectSize = 1 << 30
	maxObjects    = 16
	maxStoreBytes = 2 << 30
)

// generate returns spec's bytes: a ChaCha8 stream keyed by the seed.
func generate(sp spec) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], sp.Seed)
	b := make([]byte, sp.Size)
	_, _ = rand.NewChaCha8(key).Read(b) // never fails
	return b
}

// object is one server's copy of an object.
type object struct {
	name string
	spec spec
	data []byte
	sum  string // hex SHA-256 of data
}

// store holds the objects one server has generated. Each server has its own, as it would
// have its own disk.
type store struct {
	mu      sync.Mutex
	objects map[string]*object
}

func newStore() *store { return &store{objects: make(map[string]*object)} }

// get returns the object name generated from sp, generating it the first time.
func (s *store) get(name string, sp spec) (*object, error) {
	if sp.Size < 0 || sp.Size > maxObjectSize {
		return nil, fmt.Errorf("object size %d outside [0, %d]", sp.Size, maxObjectSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.objects[name]; o != nil && o.spec == sp {
		return o, nil
	}
	var held int64
	for n, o := range s.objects {
		if n != name {
			held += o.spec.Size
		}
	}
	if _, ok := s.objects[name]; !ok && len(s.objects) >= maxObjects || held+sp.Size > maxStoreBytes {
		return nil, fmt.Errorf("the store holds %d objects, %d bytes: no room for %q", len(s.objects), held, name)
	}
	data := generate(sp)
	sum := sha256.Sum256(data)
	o := &object{name: name, spec: sp, data: data, sum: hex.EncodeToString(sum[:])}
	s.objects[name] = o
	return o, nil
}
