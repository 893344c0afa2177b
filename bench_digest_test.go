package kwik

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"
)

// BenchmarkFanoutDigests measures what the content digests of delegated ranges cost: one
// client downloads one stream that the primary serves with Fanout from itself and two
// secondaries (ServeFanout), all on loopback with no link emulation, so that CPU is what
// limits; every iteration does one download with digests (Fanout's default) and one without
// (NoDigests), over the same sessions, and checks both byte for byte:
//
//	go test -run '^$' -bench FanoutDigests -benchtime 5x .
//
// It reports both rates, their ratio, and heap allocations per MiB moved for each (client,
// primary and secondaries together: they share the process).
func BenchmarkFanoutDigests(b *testing.B) {
	for _, chunk := range []int64{256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("chunk=%dKiB", chunk>>10), func(b *testing.B) { benchFanoutDigests(b, chunk) })
	}
}

func benchFanoutDigests(b *testing.B, chunk int64) {
	const size = 64 << 20
	conf := &Config{JoinKey: testJoinKey}
	p := newPair(b, &Config{}, conf)
	ctx := testContext(b)
	resource := content(0, size)
	src := bytes.NewReader(resource)
	var ids []string
	for range 2 {
		ln := listen(b, conf)
		id, sec := addPath(b, p.server, ln, ln.Addr().String())
		ids = append(ids, id)
		go ServeFanout(ctx, sec, src)
	}
	got := make([]byte, 0, size)
	download := func(noDigests bool) (time.Duration, uint64, *FanoutResult) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mallocs := ms.Mallocs
		start := time.Now()
		res := make(chan *FanoutResult, 1)
		go func() {
			st, err := p.server.OpenStreamSync(ctx)
			if err != nil {
				b.Error(err)
				res <- nil
				return
			}
			fr, err := Fanout(ctx, st, src, size, ids, &FanoutOptions{ChunkSize: chunk, NoDigests: noDigests})
			if err != nil {
				b.Error(err)
			}
			res <- fr
		}()
		cs, err := p.client.AcceptStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		got = got[:0]
		for {
			if len(got) == cap(got) {
				b.Fatal("more bytes than the resource")
			}
			n, err := cs.Read(got[len(got):cap(got)])
			got = got[:len(got)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		fr := <-res
		runtime.ReadMemStats(&ms)
		if !bytes.Equal(got, resource) {
			b.Fatalf("noDigests=%v: the download is not the resource", noDigests)
		}
		if fr != nil && (len(fr.Failed) > 0 || fr.Refilled > 0) {
			b.Fatalf("noDigests=%v: failures %v, %d bytes refilled", noDigests, fr.Failed, fr.Refilled)
		}
		return elapsed, ms.Mallocs - mallocs, fr
	}
	var on, off time.Duration
	var onAllocs, offAllocs uint64
	var last *FanoutResult
	b.ResetTimer()
	for i := range b.N {
		// Alternate which goes first: the second may find warmer pools and caches.
		for j := range 2 {
			if (i+j)%2 == 0 {
				t, a, fr := download(false)
				on, onAllocs, last = on+t, onAllocs+a, fr
			} else {
				t, a, _ := download(true)
				off, offAllocs = off+t, offAllocs+a
			}
		}
	}
	b.StopTimer()
	mib := float64(b.N) * size / (1 << 20)
	b.ReportMetric(mib*(1<<20)/1e6/on.Seconds(), "digests-MB/s")
	b.ReportMetric(mib*(1<<20)/1e6/off.Seconds(), "plain-MB/s")
	b.ReportMetric(off.Seconds()/on.Seconds(), "digests/plain")
	b.ReportMetric(float64(onAllocs)/mib, "digests-allocs/MiB")
	b.ReportMetric(float64(offAllocs)/mib, "plain-allocs/MiB")
	b.ReportMetric(0, "ns/op")
	if last != nil {
		b.Logf("shares with digests: %v", last.Bytes)
	}
}
