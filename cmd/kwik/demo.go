package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/netsim"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

type demoOptions struct {
	secondaries int
	sizeMiB     int
	rateMbit    int64
	delay       time.Duration
	killAfter   time.Duration
}

func demoCommand() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Download one object from a primary and its secondaries on loopback",
		Long: `demo starts a primary and secondaries on 127.0.0.1, each behind its own emulated link
(netsim: rate-limited, delayed), has a client download a generated object through all of them
with kwik.Fanout, and prints who served what. It fails if the bytes are not intact.`,
		RunE: func(cmd *cobra.Command, args []string) error { return runDemo(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.IntVar(&o.secondaries, "secondaries", 2, "number of secondary servers")
	f.IntVar(&o.sizeMiB, "size", 64, "object size in MiB")
	f.Int64Var(&o.rateMbit, "rate", 40, "rate of each server's link, Mbit/s")
	f.DurationVar(&o.delay, "delay", 10*time.Millisecond, "one-way delay of each link")
	f.DurationVar(&o.killAfter, "kill-after", 0, "blackhole the last secondary this long into the transfer (0: never)")
	return cmd
}

func runDemo(ctx context.Context, o demoOptions) error {
	if o.secondaries < 0 || o.sizeMiB <= 0 || o.rateMbit <= 0 || o.delay < 0 {
		return errors.New("demo: bad flags")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	size := int64(o.sizeMiB) << 20
	object := make([]byte, size)
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := range object {
		object[i] = byte(r.Uint32())
	}
	src := bytes.NewReader(object)
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return err
	}
	key := make([]byte, 32)
	rand.Read(key)
	conf := &kwik.Config{JoinKey: key, HeartbeatInterval: 250 * time.Millisecond, PathTimeout: time.Second}
	link := netsim.LinkConfig{Delay: o.delay, RateBps: o.rateMbit * 1_000_000}

	// Servers, each behind its own link.
	type server struct {
		ln    *kwik.Listener
		relay *netsim.Relay
	}
	var servers []server
	for range o.secondaries + 1 {
		ln, err := kwik.Listen("127.0.0.1:0", serverTLS, conf)
		if err != nil {
			return err
		}
		defer closeListener(ln)
		rl, err := netsim.NewRelay("127.0.0.1:0", ln.Addr().String(), netsim.Config{Up: link, Down: link})
		if err != nil {
			return err
		}
		defer rl.Close()
		servers = append(servers, server{ln, rl})
	}
	// Every server session is closed before the links and listeners go (defers run last first),
	// so that nothing is left waiting for a timeout.
	var (
		smu      sync.Mutex
		sessions []kwik.Session
	)
	track := func(s kwik.Session) {
		smu.Lock()
		sessions = append(sessions, s)
		smu.Unlock()
	}
	defer func() {
		smu.Lock()
		defer smu.Unlock()
		for _, s := range sessions {
			s.Close()
		}
	}()
	for _, s := range servers[1:] {
		go func() {
			for {
				sess, err := s.ln.Accept(ctx)
				if err != nil {
					return
				}
				track(sess)
				go kwik.ServeFanout(ctx, sess, src)
			}
		}()
	}
	type outcome struct {
		res *kwik.FanoutResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		sess, err := servers[0].ln.Accept(ctx)
		if err != nil {
			done <- outcome{err: err}
			return
		}
		track(sess)
		var ids []string
		for _, s := range servers[1:] {
			if err := sess.AddPath(s.relay.Addr().String()); err != nil {
				done <- outcome{err: fmt.Errorf("AddPath: %w", err)}
				return
			}
		}
		for _, p := range sess.GetActivePaths() {
			if !p.IsPrimary {
				ids = append(ids, p.PathID)
			}
		}
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			done <- outcome{err: err}
			return
		}
		io.Copy(io.Discard, st) // the request
		res, err := kwik.Fanout(ctx, st, src, size, ids, nil)
		done <- outcome{res: res, err: err}
	}()

	// The client knows only the primary's address.
	client, err := kwik.Dial(ctx, servers[0].relay.Addr().String(), clientTLS, conf)
	if err != nil {
		return err
	}
	defer client.Close()
	fmt.Printf("KWIK demo: %d MiB from 1 primary + %d secondaries, each behind %d Mbit/s, %v one way\n",
		o.sizeMiB, o.secondaries, o.rateMbit, o.delay)
	// Wait until the primary has added every secondary, so the table counts them all.
	for len(client.GetActivePaths()) < o.secondaries+1 {
		select {
		case out := <-done:
			return out.err
		case <-time.After(10 * time.Millisecond):
		}
	}
	st, err := client.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	st.Write([]byte("GET /object"))
	st.Close()

	progress := mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(48))
	bar := progress.AddBar(size,
		mpb.PrependDecorators(decor.Name("download "), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.Percentage(), decor.Name(" "), decor.AverageSpeed(decor.SizeB1024(0), "% .1f")),
	)
	start := time.Now()
	if o.killAfter > 0 && o.secondaries > 0 {
		time.AfterFunc(o.killAfter, func() { servers[len(servers)-1].relay.SetBlackhole(true) })
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var got int64
	for {
		n, err := st.Read(buf)
		h.Write(buf[:n])
		got += int64(n)
		bar.IncrBy(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			progress.Wait()
			return err
		}
	}
	elapsed := time.Since(start)
	progress.Wait()
	out := <-done
	if out.err != nil {
		return out.err
	}
	want := sha256.Sum256(object)
	intact := got == size && bytes.Equal(h.Sum(nil), want[:])

	// The client's own view: what each path brought, and its round-trip time.
	printPaths(os.Stdout, client.Stats(), elapsed)
	mbit := float64(size) * 8 / elapsed.Seconds() / 1e6
	alone := time.Duration(float64(size) * 8 / float64(o.rateMbit*1_000_000) * float64(time.Second))
	fmt.Printf("\ntotal: %d MiB in %v = %.1f Mbit/s (links sum %d Mbit/s); one server alone: at least %v\n",
		o.sizeMiB, elapsed.Round(time.Millisecond), mbit, o.rateMbit*int64(o.secondaries+1), alone.Round(time.Millisecond))
	if len(out.res.Failed) > 0 {
		fmt.Printf("failover: %d delegations failed, %d KiB refilled by the primary\n", len(out.res.Failed), out.res.Refilled>>10)
	}
	if !intact {
		return fmt.Errorf("demo: received %d bytes, sha256 %x, want %d bytes, %x", got, h.Sum(nil), size, want)
	}
	fmt.Printf("intact: sha256 %x\n", want[:8])
	return nil
}
