package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/kwikhttp"
)

type getOptions struct {
	output     string
	resume     bool
	caFile     string
	pins       []string
	allowPaths []string
	serverName string
	noProgress bool
	verbose    bool
}

func getCommand() *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get [flags] PRIMARY-ADDRESS NAME",
		Short: "Download a file from a kwik serve primary (and its secondaries)",
		Long: `get downloads the file NAME from the primary at PRIMARY-ADDRESS (an http.Client over
kwikhttp: GET https://PRIMARY-ADDRESS/NAME), which has its secondaries send parts of it, shows
the progress and then what each path brought, and checks the size and the SHA-256 of the
whole file against the primary's Repr-Digest. The primary gives the digests of the parts the
secondaries send, so a secondary's replica with other bytes costs time, not content; a file
that fails the whole-file check all the same is moved to NAME.corrupt and get fails.

Trust: --ca (a PEM file of trusted certificates, such as the servers' own), or --pin with the
SHA-256 fingerprint of a server's certificate (as kwik serve prints it): a bare fingerprint
pins the primary, ADDRESS=FINGERPRINT the secondary the primary names by ADDRESS; an address
without a pin is checked against --ca or the system's roots. A secondary's address must be
public, or of the primary's own kind (loopback, private), or pinned, or in --allow-path.
--resume continues a partial output file (with a Range request).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd.Context(), o, args[0], args[1], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "", "output file (default: NAME's last element)")
	f.BoolVarP(&o.resume, "resume", "c", false, "continue a partial output file")
	f.StringVar(&o.caFile, "ca", "", "PEM file of trusted certificates")
	f.StringSliceVar(&o.pins, "pin", nil, "SHA-256 fingerprint of the primary's certificate, or ADDRESS=FINGERPRINT for a secondary's")
	f.StringSliceVar(&o.allowPaths, "allow-path", nil, "addresses or prefixes of secondaries to join even if private")
	f.StringVar(&o.serverName, "server-name", "", "TLS server name (default: each address's host)")
	f.BoolVar(&o.noProgress, "no-progress", false, "no progress bar")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log paths and delegations")
	return cmd
}

// cleanName checks a requested name: relative, slash-separated, no "..", no empty parts.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\\\x00\n\r") || path.IsAbs(name) || path.Clean(name) != name ||
		name == ".." || strings.HasPrefix(name, "../") {
		return "", fmt.Errorf("bad file name %q", name)
	}
	return name, nil
}

func runGet(ctx context.Context, o getOptions, addr, name string, stdout, stderr io.Writer) error {
	name, err := cleanName(name)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if o.output == "" {
		o.output = path.Base(name)
	}
	pinned := parsePins(o.pins)
	tlsConf, err := clientTLS(o.caFile, pinned.forAddr(addr, true), o.serverName)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	allowed, err := parseAllowed(o.allowPaths)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	flags := os.O_RDWR | os.O_CREATE // read too: a resumed download's digest covers what is there
	if !o.resume {
		flags |= os.O_TRUNC
	}
	out, err := os.OpenFile(o.output, flags, 0o644)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer out.Close()
	offset, err := out.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}

	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelDebug
	}
	tr := &kwikhttp.Transport{
		TLSClientConfig: tlsConf,
		Config: &kwik.Config{
			Logger:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
			AllowPath: allowPath(addr, pinned, allowed),
			PathTLS:   pathTLS(pinned, o.caFile, o.serverName),
		},
	}
	defer tr.Close()
	client := &http.Client{Transport: tr}
	u := (&url.URL{Scheme: "https", Host: addr, Path: "/" + name}).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer resp.Body.Close()
	var size int64
	switch resp.StatusCode {
	case http.StatusOK: // the whole file (a server that ignored the Range too)
		if offset > 0 {
			if err := out.Truncate(0); err != nil {
				return fmt.Errorf("get: %w", err)
			}
			if offset, err = out.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("get: %w", err)
			}
		}
		size = resp.ContentLength
	case http.StatusPartialContent:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			return fmt.Errorf("get: %s: the server sent the range %q, not from %d", name, resp.Header.Get("Content-Range"), offset)
		}
		size = total
	case http.StatusRequestedRangeNotSatisfiable: // nothing after offset: complete, or longer than the file
		total, err := strconv.ParseInt(strings.TrimPrefix(resp.Header.Get("Content-Range"), "bytes */"), 10, 64)
		if err != nil || total != offset {
			return fmt.Errorf("get: %s has %d bytes, more than the server's file", o.output, offset)
		}
		size = total
		resp.Body = http.NoBody
	default:
		return fmt.Errorf("get: %s: server: %s", name, resp.Status)
	}
	if size < 0 {
		return fmt.Errorf("get: %s: the server sent no size", name)
	}
	// The digest covers the whole file: what a resumed download already holds counts too.
	var want []byte
	if v := resp.Header.Get("Repr-Digest"); v != "" {
		if want = sha256Of(v); want == nil {
			return fmt.Errorf("get: %s: unreadable Repr-Digest %q", name, v)
		}
	}
	sum := sha256.New()
	if want != nil && offset > 0 {
		if _, err := io.Copy(sum, io.NewSectionReader(out, 0, offset)); err != nil {
			return fmt.Errorf("get: reading %s: %w", o.output, err)
		}
	}

	var progress *mpb.Progress
	var bar *mpb.Bar
	if !o.noProgress && size > offset {
		progress = mpb.NewWithContext(ctx, mpb.WithOutput(stderr), mpb.WithWidth(48))
		bar = progress.AddBar(size,
			mpb.PrependDecorators(decor.Name(path.Base(name)+" "), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.Percentage(), decor.Name(" "), decor.AverageSpeed(decor.SizeB1024(0), "% .1f")),
		)
		bar.SetCurrent(offset)
	}
	start := time.Now()
	got, err := io.Copy(io.MultiWriter(out, sum), progressReader{resp.Body, bar})
	elapsed := time.Since(start)
	if progress != nil {
		if offset+got != size {
			bar.Abort(false) // or Wait would wait for the rest
		}
		progress.Wait()
	}
	if errors.Is(err, kwikhttp.ErrDigestMismatch) {
		return corrupt(out, o.output, "its SHA-256 is not the one the primary announced")
	}
	if err != nil {
		return fmt.Errorf("get: after %d bytes: %w", offset+got, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	fi, err := os.Stat(o.output)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if offset+got != size || fi.Size() != size {
		return fmt.Errorf("get: %s has %d bytes, the server's file %d", o.output, fi.Size(), size)
	}
	checked := "size checked"
	if want != nil {
		if got := sum.Sum(nil); !bytes.Equal(got, want) {
			return corrupt(nil, o.output, fmt.Sprintf("its SHA-256 is %x, the primary's file's %x", got, want))
		}
		checked = "size and SHA-256 checked"
	}
	if sess := tr.Session(addr); sess != nil {
		printPaths(stdout, sess.Stats(), elapsed)
	}
	mbit := float64(got) * 8 / elapsed.Seconds() / 1e6
	fmt.Fprintf(stdout, "\n%s: %d bytes (%d this time) in %v = %.1f Mbit/s, %s\n",
		o.output, size, got, elapsed.Round(time.Millisecond), mbit, checked)
	return nil
}

// corrupt moves a downloaded file that failed its digest check out of the way (NAME.corrupt),
// so that nothing takes it for the file, nor resumes it, and returns the error that says so.
// out, if not nil, is the file still open.
func corrupt(out *os.File, name, why string) error {
	if out != nil {
		out.Close()
	}
	aside := name + ".corrupt"
	if err := os.Rename(name, aside); err != nil {
		return fmt.Errorf("get: %s is CORRUPT (%s), and could not be moved aside: %v; delete it", name, why, err)
	}
	return fmt.Errorf("get: the download is CORRUPT: %s; kept as %s, nothing left at %s (the primary's file changed during the download, or a secondary's replica differs and the primary gave no digests of its parts)", why, aside, name)
}

// contentRange reads "bytes start-end/total".
func contentRange(v string) (start, total int64, ok bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	rng, tot, ok2 := strings.Cut(rest, "/")
	a, _, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return start, total, err1 == nil && err2 == nil && start >= 0 && start < total
}

// sha256Of reads the sha-256 of a Repr-Digest field (RFC 9530), or nil.
func sha256Of(field string) []byte {
	for part := range strings.SplitSeq(field, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "sha-256=:"); ok && strings.HasSuffix(v, ":") {
			if b, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(v, ":")); err == nil && len(b) == sha256.Size {
				return b
			}
		}
	}
	return nil
}

// progressReader moves bar as bytes are read.
type progressReader struct {
	r   io.Reader
	bar *mpb.Bar
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if p.bar != nil {
		p.bar.IncrBy(n)
	}
	return n, err
}
