package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/kwik-go/kwik"
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
		Long: `get downloads the file NAME from the primary at PRIMARY-ADDRESS, which has its secondaries
send parts of it, shows the progress and then what each path brought, and checks the size and
the SHA-256 of the whole file against the primary's (a replica with other bytes shows there).

Trust: --ca (a PEM file of trusted certificates, such as the servers' own), or --pin with the
SHA-256 fingerprint of a server's certificate (as kwik serve prints it): a bare fingerprint
pins the primary, ADDRESS=FINGERPRINT the secondary the primary names by ADDRESS; an address
without a pin is checked against --ca or the system's roots. A secondary's address must be
public, or of the primary's own kind (loopback, private), or pinned, or in --allow-path.
--resume continues a partial output file.`,
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
	conf := &kwik.Config{
		Logger:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		AllowPath: allowPath(addr, pinned, allowed),
		PathTLS:   pathTLS(pinned, o.caFile, o.serverName),
	}
	sess, err := kwik.Dial(ctx, addr, tlsConf, conf)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer sess.Close()
	st, err := sess.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if _, err := io.WriteString(st, getRequest{offset: offset, name: name}.String()); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	st.Close()
	line, err := readLine(st)
	if err != nil {
		return fmt.Errorf("get: reading the answer: %w", err)
	}
	size, want, err := parseResponse(line)
	if err != nil {
		return fmt.Errorf("get: %s: %w", name, err)
	}
	// The digest covers the whole file: what a resumed download already holds counts too.
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
	got, err := io.Copy(io.MultiWriter(out, sum), progressReader{st, bar})
	elapsed := time.Since(start)
	if progress != nil {
		if offset+got != size {
			bar.Abort(false) // or Wait would wait for the rest
		}
		progress.Wait()
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
			return fmt.Errorf("get: %s is CORRUPT: its SHA-256 is %x, the primary's file's %x (a secondary's replica differs?); delete it and download again", o.output, got, want)
		}
		checked = "size and SHA-256 checked"
	}
	printPaths(stdout, sess.Stats(), elapsed)
	mbit := float64(got) * 8 / elapsed.Seconds() / 1e6
	fmt.Fprintf(stdout, "\n%s: %d bytes (%d this time) in %v = %.1f Mbit/s, %s\n",
		o.output, size, got, elapsed.Round(time.Millisecond), mbit, checked)
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
