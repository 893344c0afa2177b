package kwik

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/kwik-go/kwik/internal/wire"
)

// logLines is repetitive data, as logs and JSON are.
func logLines(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"time":"2026-11-26T12:%02d:%02d Z","level":"info","msg":"request served","path":"/objects/%d","status":200,"bytes":%d}`+"\n",
			i/60%60, i%60, i%97, 1000+i%13)
	}
	return b.Bytes()[:n]
}

// transferOnce sends data from the client to the primary and returns what the client's path
// put on the wire.
func transferOnce(t *testing.T, clientConf, serverConf *Config, data []byte) uint64 {
	t.Helper()
	p := newPair(t, clientConf, serverConf)
	ctx := testContext(t)
	st, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		st.Write(data)
		st.Close()
	}()
	ss, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(ss)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("received %d bytes of %d, %v", len(got), len(data), err)
	}
	return p.client.Stats().Paths[0].BytesSent
}

// Compression shrinks repetitive data on the wire when both sides enable it, and only then;
// incompressible data goes as it is; every byte arrives either way.
func TestCompression(t *testing.T) {
	on := &Config{Compression: true}
	logs := logLines(4 << 20)
	random := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{3}).Read(random)
	for _, tc := range []struct {
		name           string
		client, server *Config
		data           []byte
		shrinks        bool
	}{
		{"logs, both on", on, on, logs, true},
		{"logs, client only", on, nil, logs, false},
		{"logs, server only", nil, on, logs, false},
		{"random, both on", on, on, random, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wireBytes := transferOnce(t, tc.client, tc.server, tc.data)
			ratio := float64(wireBytes) / float64(len(tc.data))
			t.Logf("%d bytes sent as %d (%.3f)", len(tc.data), wireBytes, ratio)
			if tc.shrinks != (ratio < 0.5) {
				t.Fatalf("%d bytes went as %d on the wire", len(tc.data), wireBytes)
			}
		})
	}
}

// A compressed packet the receiver did not ask for, one that decodes past the message size,
// and one that is not zstd at all each end the session with KWIK_INVALID_FRAME.
func TestCompressionHostile(t *testing.T) {
	zeros := zstdEncoder().EncodeAll(make([]byte, 1<<20), nil) // 1 MiB in a few bytes
	notFrames := zstdEncoder().EncodeAll(wire.AppendDataPacket(nil, &wire.DataPacket{PacketID: 5, Frames: []wire.DataFrame{{Data: []byte("x")}}}), nil)
	for _, tc := range []struct {
		name       string
		serverConf *Config
		compressed []byte
	}{
		{"not negotiated", nil, zstdEncoder().EncodeAll(logLines(4096), nil)},
		{"decompression bomb", &Config{Compression: true}, zeros},
		{"not zstd", &Config{Compression: true}, []byte("definitely not a zstd frame")},
		{"a packet inside", &Config{Compression: true}, notFrames},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, &Config{Compression: true}, tc.serverConf)
			ctx := testContext(t)
			st, err := p.client.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("x")); err != nil { // opens a real stream
				t.Fatal(err)
			}
			rs := st.(*stream).send.rs
			rs.mu.Lock()
			msg := wire.AppendDataPacketMessage(nil, &wire.DataPacket{PacketID: rs.p.nextPacket.Add(1) - 1, Compressed: tc.compressed})
			_, err = rs.qs.Write(msg)
			rs.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.server.Context().Done():
			case <-ctx.Done():
				t.Fatal("the session survived")
			}
			if err := context.Cause(p.server.Context()); !errors.Is(err, ErrInvalidFrame) {
				t.Fatalf("session ended with %v, want KWIK_INVALID_FRAME", err)
			}
		})
	}
}
