package kwik

import (
	"context"
	"fmt"
	"io"
	"time"
)

// What a secondary's serving of delegations may cost, whatever its client does: the client may
// withhold credit (each range's Write then waits), and its primary may have many ranges
// outstanding. ServeFanout serves at most ServeFanoutWorkers ranges of a session at once (the
// others wait, bounded by the session's delegation cap, see PROTOCOL.md section 15), reads each
// request within ServeFanoutIdle, and ends a range whose writes make no progress for
// ServeFanoutIdle: the client then hears that it was written short, and the primary refills
// the rest.
const (
	ServeFanoutWorkers = 16
	ServeFanoutIdle    = 30 * time.Second
)

// errNotSecondary is what ServeFanout returns for a session this server is not a secondary of.
var errNotSecondary = &detailError{msg: "kwik: ServeFanout serves a secondary's session only", is: ErrWrongRole}

// serveFanout answers the delegations of a secondary's session with serve, on at most workers
// goroutines, until the session ends or ctx is canceled. It returns once every worker has.
func serveFanout(ctx context.Context, sess Session, workers int, serve func(Stream)) error {
	if sess.Role() != RoleSecondary {
		return errNotSecondary
	}
	sem := make(chan struct{}, workers)
	defer func() {
		for range workers { // wait for the workers
			sem <- struct{}{}
		}
	}()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			<-sem
			return err
		}
		go func() {
			defer func() { <-sem }()
			serve(st)
		}()
	}
}

// serveFanoutRange answers one delegation made by Fanout with the default request, from src.
func serveFanoutRange(st Stream, src io.ReaderAt) {
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(ServeFanoutIdle))
	req, err := io.ReadAll(io.LimitReader(st, 64))
	if err != nil {
		return
	}
	off, n, err := ParseFanoutRequest(req)
	if err != nil {
		return
	}
	// Stream the range in pieces: bounded memory, and the first bytes leave at once. A short
	// read (a replica smaller than asked) ends the range early: Close then tells the primary
	// exactly what is missing, and it refills.
	_, _ = CopyWithIdleTimeout(st, io.NewSectionReader(src, off, n), ServeFanoutIdle)
}

// CopyWithIdleTimeout copies src to st, as io.Copy, but fails once a write has made no
// progress for idle: a peer that withholds credit cannot hold the writer forever.
func CopyWithIdleTimeout(st Stream, src io.Reader, idle time.Duration) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			_ = st.SetWriteDeadline(time.Now().Add(idle))
			w, err := st.Write(buf[:m])
			n += int64(w)
			if err != nil {
				return n, fmt.Errorf("kwik: writing the range: %w", err)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
